"""The claims ledger: each conclusion of the study this project grew from (:data:`CLAIMS`, drawn from
pictures) put to a test that could come out either way, with a control, an effect size with a 95 %
interval, and a verdict by a rule fixed before any number is computed.

* :mod:`.rules` - a row (:class:`ClaimResult`), its verdict (:class:`Rule`) and the intervals;
* :mod:`.probes` - the tests, one function per claim;
* :mod:`.bench` - the planted-cause bench: every test on every planted cause;
* :mod:`.ledger` - which rows each stage saves, how they are read, gated and combined over seeds.
"""

from .bench import CAUSE_OF_CLAIM, CAUSES, bench_gate, bench_verdicts, run_bench
from .ledger import (
    CLAIMS_FILE,
    combine_seeds,
    gradcam_stage_claims,
    read_ledger,
    reevaluation_claims,
    reseed_stage_claims,
)
from .probes import (
    GRADCAM_CLAIM_LAYER,
    TileShuffle,
    accuracy_claims,
    background_claim,
    background_shares,
    gradcam_claim,
    off_center_claim,
    reseed_claims,
    shuffled_accuracy,
    texture_claim,
)
from .rules import (
    ALL_FAILURES,
    ALL_IMAGES,
    BENCH,
    CLAIMS,
    INCONCLUSIVE,
    MIN_BOOTSTRAP_SAMPLE,
    MODEL_ERRORS,
    NOT_SUPPORTED,
    SUPPORTED,
    T_OVER_SEEDS,
    ClaimResult,
    Rule,
    bootstrap_interval,
    exact_proportion,
    mcnemar_exact,
    t_interval,
)
