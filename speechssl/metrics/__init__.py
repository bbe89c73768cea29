"""Evaluation metrics, one module per kind, every score in percent (x100):

- error_rates: edit distance, WER, CER, PER (ASR, PR)
- classification: accuracy (KS, SID, ER, IC), Matthews correlation, F1 (GLUE)
- correlation: Pearson, Spearman (GLUE STS-B)
- squad: exact match and token F1 (SQuAD v1.1)
- slots: slot-type F1 and slot-value CER (SF)
- verification: EER and minDCF (ASV)
- diarization: DER (SD)
- detection: cosine distance, subsequence DTW, TWV / MTWV / MAP (QbE)

``from speechssl.metrics import wer`` (or ``metrics.wer``) reaches every one of them.
"""

from speechssl.metrics.classification import accuracy, binary_f1, matthews_corrcoef
from speechssl.metrics.correlation import pearson, spearman
from speechssl.metrics.detection import (
    cosine_distance,
    mean_average_precision,
    mtwv,
    subsequence_dtw,
    twv,
)
from speechssl.metrics.diarization import der, diarization_errors
from speechssl.metrics.error_rates import cer, edit_distance, edit_ops, error_rate, per, wer
from speechssl.metrics.slots import Slots, slot_type_f1, slot_value_cer, slot_value_pairs
from speechssl.metrics.squad import squad_normalize, squad_scores
from speechssl.metrics.verification import eer, min_dcf

__all__ = [
    "Slots",
    "accuracy",
    "binary_f1",
    "cer",
    "cosine_distance",
    "der",
    "diarization_errors",
    "edit_distance",
    "edit_ops",
    "eer",
    "error_rate",
    "matthews_corrcoef",
    "mean_average_precision",
    "min_dcf",
    "mtwv",
    "pearson",
    "per",
    "slot_type_f1",
    "slot_value_cer",
    "slot_value_pairs",
    "spearman",
    "squad_normalize",
    "squad_scores",
    "subsequence_dtw",
    "twv",
    "wer",
]
