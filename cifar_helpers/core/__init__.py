"""Data, the ResNet-18, augmentation, training and predictions."""
