"""Text tasks on the same upstream -> featurizer -> probe interface (Devlin et al., 2019):
sentence classification (sst2), part-of-speech tagging (pos), sentence-pair inference (nli)
and extractive question answering (qa); the task registry imports these modules."""
