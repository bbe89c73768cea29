"""VoxCeleb1 (Nagrani et al. 2017) for SID (``iden_split.txt``: 1/2/3 = train/dev/test) and
ASV (train on the VoxCeleb1 dev speakers, test on the ``veri_test`` trial list)."""

from __future__ import annotations

from pathlib import Path

from speechssl.data.corpora import READERS
from speechssl.data.corpora.common import (
    add_durations,
    check_file,
    option_list,
    read_lines,
    split_ws,
    strip_labels,
)
from speechssl.errors import ConfigError, ManifestError

SID_SPLITS = {"1": "train", "2": "dev", "3": "test"}
# SUPERB's list first: s3prl's sv_voxceleb1/voxceleb1_test_v2.txt holds the original
# VoxCeleb1-O list's 37,720 trials (veri_test.txt), not the cleaned veri_test2.txt (37,611)
TRIAL_FILES = ("veri_test.txt", "veri_test2.txt")


def utt_id(rel: str) -> str:
    """``id10001/1zcIwhmdeo4/00001.wav`` -> ``id10001/1zcIwhmdeo4/00001``."""
    return rel[:-4] if rel.endswith(".wav") else rel


def find_audio(wav_dirs: list[Path], rel: str, where: str) -> Path:
    """The first ``<wav dir>/<rel>`` that exists; ManifestError at ``where`` otherwise."""
    for d in wav_dirs:
        if (d / rel).is_file():
            return d / rel
    raise ManifestError(f"{where}: audio file {rel!r} not found under "
                        f"{', '.join(str(d) for d in wav_dirs)}")


def check_rel(rel: str, where: str) -> str:
    """A ``<speaker>/<video>/<file>.wav`` path, else ManifestError at ``where``."""
    if rel.count("/") != 2 or not rel.endswith(".wav"):
        raise ManifestError(f"{where}: expected '<speaker>/<video>/<utt>.wav', got {rel!r}")
    return rel


def read_iden_split(path: Path, wav_dirs: list[Path]) -> dict[str, list[dict]]:
    """``<1|2|3> <speaker>/<video>/<utt>.wav`` lines -> items per split."""
    splits: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    for where, _, line in read_lines(path, "VoxCeleb1 identification split"):
        fields = split_ws(line)
        if len(fields) != 2 or fields[0] not in SID_SPLITS:
            raise ManifestError(f"{where}: expected '<1|2|3> <speaker>/<video>/<utt>.wav', "
                                f"got {line!r}")
        rel = check_rel(fields[1], where)
        splits[SID_SPLITS[fields[0]]].append({
            "id": utt_id(rel), "path": str(find_audio(wav_dirs, rel, where)),
            "speaker": rel.split("/")[0], "_where": where})
    return splits


def read_trials(path: Path) -> list[tuple[str, str, str]]:
    """``<0|1> <enroll wav> <test wav>`` lines -> (label, enroll rel, test rel)."""
    trials = []
    for where, _, line in read_lines(path, "VoxCeleb1 verification trial list"):
        fields = split_ws(line)
        if len(fields) != 3 or fields[0] not in ("0", "1"):
            raise ManifestError(f"{where}: expected '<0|1> <enroll>.wav <test>.wav', got {line!r}")
        trials.append((fields[0], check_rel(fields[1], where), check_rel(fields[2], where)))
    if not trials:
        raise ManifestError(f"{path}: no trials")
    return trials


def trial_file(root: Path, cfg) -> Path:
    """``corpus.trials`` (relative to the root) or the first of veri_test (SUPERB's) and
    veri_test2 (the cleaned list: said, as its EERs do not compare with SUPERB's)."""
    if cfg.get("trials"):
        return check_file(root / str(cfg.trials), "VoxCeleb1 trial list (corpus.trials)")
    for name in TRIAL_FILES:
        if (root / name).is_file():
            if name != TRIAL_FILES[0]:
                print(f"[voxceleb1] {root / TRIAL_FILES[0]} not found: ASV tests on {name}, "
                      "the cleaned list, not SUPERB's (its EERs are not comparable with "
                      "SUPERB's published ones)")
            return root / name
    raise ManifestError(f"{root}: no trial list ({' or '.join(TRIAL_FILES)}); "
                        f"download it into the root or set corpus.trials")


@READERS.register("voxceleb1")
def scan(root: Path, cfg, out: Path) -> tuple[dict, dict, dict]:
    """Manifests ``sid``, ``asv`` (train/test) and ``pretrain``, and ``asv/trials.txt``
    in the synth format ``<1|0> <enroll id> <test id>``."""
    wav_dirs = [root / d for d in option_list(cfg, "wav_dirs") if (root / d).is_dir()]
    if not wav_dirs:
        raise ConfigError(f"corpus.wav_dirs={option_list(cfg, 'wav_dirs')}: none of these "
                          f"directories exists under {root}")
    sid = read_iden_split(check_file(root / str(cfg.get("iden_split", "iden_split.txt")),
                                     "VoxCeleb1 iden_split.txt"), wav_dirs)
    tfile = trial_file(root, cfg)
    trials = read_trials(tfile)
    test_rels = sorted({r for _, a, b in trials for r in (a, b)})
    test_speakers = {r.split("/")[0] for r in test_rels}
    asv_test = [{"id": utt_id(r), "path": str(find_audio(wav_dirs, r, str(tfile))),
                 "speaker": r.split("/")[0]} for r in test_rels]
    asv_train = [dict(it) for s in ("train", "dev", "test") for it in sid[s]
                 if it["speaker"] not in test_speakers]
    if not asv_train:
        raise ManifestError(f"{root}: no utterances of speakers outside the trial list for "
                            f"ASV training")
    for split in ("train", "dev", "test"):
        add_durations(sid[split])
    add_durations(asv_test)
    known = {it["id"]: it["duration"] for s in sid.values() for it in s}
    for it in asv_train:
        it["duration"] = known[it["id"]]
    lines = "".join(f"{lab} {utt_id(a)} {utt_id(b)}\n" for lab, a, b in trials)
    manifests = {"sid": sid, "asv": {"train": asv_train, "test": asv_test},
                 "pretrain": {s: strip_labels(sid[s]) for s in ("train", "dev")}}
    return manifests, {"trial_list": str(tfile)}, {"manifests/asv/trials.txt": lines}
