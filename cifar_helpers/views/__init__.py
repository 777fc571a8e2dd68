"""What a person sees: figures, tables, the failure browser and the HTML report."""
