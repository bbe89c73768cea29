"""Tests of the synthesized corpus (speechssl.data.synth)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechssl.data.synth import SIZES, corpus_dir_name, ensure_corpus
from speechssl.data.synth import augment as A
from speechssl.data.synth import generate as gen
from speechssl.data.synth import grammar as G

SUBSET_SPLITS = {
    "asr": ("train", "dev", "test"), "ks": ("train", "dev", "test"), "ic": ("train", "dev", "test"),
    "sf": ("train", "dev", "test"), "er": ("train", "dev", "test"), "sid": ("train", "dev", "test"),
    "asv": ("train", "test"), "sd": ("train", "dev", "test"), "qbe": ("dev", "test"),
    "pretrain": ("train", "dev"),
}
SPEAKER_DISJOINT = ("asr", "ks", "ic", "sf", "er", "sd")
TEXT_RE = re.compile(r"^[a-z']+( [a-z']+)*$")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    return ensure_corpus(root, "tiny", seed=0, num_workers=2, progress=False)


def _manifest(corpus: Path, subset: str, split: str) -> list[dict]:
    with open(corpus / "manifests" / subset / f"{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _tree_hashes(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------
# corpus structure
# ---------------------------------------------------------------------------

def test_layout_and_meta(corpus):
    assert corpus.name == corpus_dir_name("tiny", 0) == "synth-tiny-seed0"
    meta = json.loads((corpus / "meta.json").read_text())
    assert meta["format_version"] == gen.FORMAT_VERSION == 4
    assert meta["size"] == "tiny" and meta["seed"] == 0
    assert meta["sample_rate"] == 16000
    assert len(meta["speakers"]) == gen.SPEAKER_COUNTS["tiny"]
    for info in meta["speakers"].values():
        assert {"voice", "pitch", "rate", "formant", "formants", "tone", "split"} <= set(info)
    splits = meta["speaker_splits"]
    assert sum(len(v) for v in splits.values()) == len(meta["speakers"])
    assert not (set(splits["train"]) & set(splits["dev"])) and not (set(splits["dev"]) & set(splits["test"]))
    assert len(meta["keywords"]) == 12 and "_silence_" in meta["keywords"] and "_unknown_" in meta["keywords"]
    assert meta["emotions"] == ["neutral", "happy", "sad", "angry"]
    assert {"action", "object", "location"} == set(meta["intents"])
    assert meta["phone_set"] == sorted(set(meta["phone_set"])) and len(meta["phone_set"]) > 30
    assert meta["generator"].startswith("espeak-ng ")
    for sub, splits_ in SUBSET_SPLITS.items():
        assert set(meta["counts"][sub]) == set(splits_)
        assert meta["hours"][sub] > 0
    # the spoken speakers are distinct voice configurations
    combos = {(i["pitch"], i["rate"], i["formant"]) for i in meta["speakers"].values()}
    assert len(combos) == len(meta["speakers"])
    # every session an item names is described, and belongs to the item's speaker
    for sub in ("asr", "sid", "asv", "ks"):
        for split in SUBSET_SPLITS[sub]:
            for e in _manifest(corpus, sub, split):
                assert e["session"] in meta["sessions"]
                assert e["session"].rsplit("-", 1)[0] == e["speaker"]
                # read speech in studio sessions (-c), speakers and keywords in the wild (-s)
                code = "c" if gen.SUBSET_CONDITIONS[sub] == "studio" else "s"
                assert e["session"].rsplit("-", 1)[1][0] == code, (sub, e["session"])
                if code == "c":
                    assert meta["sessions"][e["session"]]["band"] == "full"


def test_manifests(corpus):
    meta = json.loads((corpus / "meta.json").read_text())
    all_ids: dict[str, str] = {}
    for sub, splits in SUBSET_SPLITS.items():
        for split in splits:
            path = corpus / "manifests" / sub / f"{split}.jsonl"
            lines = path.read_text(encoding="utf-8").splitlines()
            entries = [json.loads(x) for x in lines]
            assert entries, (sub, split)
            assert meta["counts"][sub][split] == len(entries)
            assert [e["id"] for e in entries] == sorted(e["id"] for e in entries)
            assert lines == [json.dumps(e, sort_keys=True, ensure_ascii=False) for e in entries]
            for e in entries:
                assert {"id", "path", "duration", "speaker"} <= set(e)
                if sub != "pretrain":
                    assert e["id"] not in all_ids, e["id"]
                    all_ids[e["id"]] = e["path"]
                else:
                    assert all_ids[e["id"]] == e["path"]  # pretrain lists existing items
                    assert set(e) - {"alignment"} == {"id", "path", "duration", "speaker"}
                wav = corpus / e["path"]
                assert wav.is_file(), wav
                info = sf.info(str(wav))
                assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
                assert e["duration"] == round(info.frames / 16000, 4)
                if "text" in e and e["text"]:
                    assert TEXT_RE.match(e["text"]), e["text"]


def test_subset_fields(corpus):
    meta = json.loads((corpus / "meta.json").read_text())
    phones = set(meta["phone_set"])
    for split in ("train", "dev", "test"):
        for e in _manifest(corpus, "asr", split):
            ph = e["phonemes"].split(" ")
            assert ph and set(ph) <= phones
            assert not re.search(r"[ˈˌ.]", e["phonemes"])
        ks = _manifest(corpus, "ks", split)
        assert {e["label"] for e in ks} == set(meta["keywords"])
        for e in ks:
            assert e["duration"] == 1.0
            assert (e["text"] == "") == (e["label"] == "_silence_")
            if e["label"] not in ("_silence_", "_unknown_"):
                assert e["text"] == e["label"]
            if e["label"] == "_unknown_":
                assert e["text"] not in meta["keywords"]
        for e in _manifest(corpus, "ic", split):
            assert e["action"] in meta["intents"]["action"]
            assert e["object"] in meta["intents"]["object"]
            assert e["location"] in meta["intents"]["location"]
            assert [e["action"], e["object"], e["location"]] in meta["intent_combinations"]
            assert e["phonemes"]
        for e in _manifest(corpus, "sf", split):
            assert e["slots"]
            for s in e["slots"]:
                assert s["type"] in meta["slot_types"]
                assert e["text"][s["start"]:s["end"]] == s["value"]
        er = _manifest(corpus, "er", split)
        assert {e["emotion"] for e in er} == set(meta["emotions"])
        for e in _manifest(corpus, "sd", split):
            a, b = e["speakers"]
            assert a != b and e["speaker"] == f"{a}+{b}"
            segs = e["segments"]
            assert {s["speaker"] for s in segs} == {a, b}
            for s in segs:
                assert 0 <= s["start"] < s["end"] <= e["duration"]
            (s1, s2) = sorted(segs, key=lambda s: s["start"])
            assert s2["start"] < s1["end"]  # overlap
            assert s1["start"] < s2["start"] and s2["end"] > s1["end"]  # single-speaker regions
    for split in ("dev", "test"):
        q = _manifest(corpus, "qbe", split)
        queries = [e for e in q if e["kind"] == "query"]
        docs = [e for e in q if e["kind"] == "doc"]
        assert queries and docs
        assert {e["speaker"] for e in queries}.isdisjoint({e["speaker"] for e in docs})
        hits = sum(e["term"] in d["text"].split() for e in queries for d in docs)
        assert hits > 0
        for e in queries:
            assert "term" in e and TEXT_RE.match(e["term"])


def test_phone_alignments_follow_the_audio(corpus):
    """Every single-speaker utterance carries eSpeak's phone timing, retimed through
    trimming, speed perturbation and padding: the phone sequence is the transcription and
    the first / last phone meet the speech onset / offset found from the audio's energy."""
    plan = {it["id"]: it for it in gen.plan_corpus("tiny", 0)[0]}
    onset, offset, checked = {True: [], False: []}, {True: [], False: []}, 0
    for sub in ("asr", "ic", "sf", "er", "sid", "asv"):
        for split in SUBSET_SPLITS[sub]:
            for e in _manifest(corpus, sub, split):
                ali = e["alignment"]
                assert ali and all(0 <= s <= t <= e["duration"] for _, s, t in ali), e["id"]
                assert all(a[2] <= b[1] for a, b in zip(ali, ali[1:], strict=False)), e["id"]
                if "phonemes" in e:
                    assert [p for p, _, _ in ali] == e["phonemes"].split(" "), e["id"]
                    checked += 1
                aug, session = plan[e["id"]]["aug"], plan[e["id"]]["session"]
                if "snr_db" in aug or "rt60" in session or session["snr_db"] < 15:
                    continue  # noise and reverberation blur the energy onset / offset
                x, _ = sf.read(str(corpus / e["path"]))
                n = len(x) // 160
                db = 10 * np.log10(np.mean(x[: n * 160].reshape(n, 160) ** 2, axis=1) + 1e-12)
                floor = np.percentile(db, 5)  # the session's noise floor, in the padding
                active = np.nonzero(db > max(db.max() - 30, floor + 12))[0]
                onset[aug["speed"] != 1].append(ali[0][1] - active[0] * 0.01)
                offset[aug["speed"] != 1].append(ali[-1][2] - (active[-1] + 1) * 0.01)
    assert checked > 50
    for sped in (True, False):  # a speed factor left out of the retiming moves them ~100 ms
        assert len(onset[sped]) >= 5, len(onset[sped])
        assert np.median(np.abs(onset[sped])) < 0.015 and np.median(np.abs(offset[sped])) < 0.015
    assert not any("alignment" in e for e in _manifest(corpus, "sd", "train"))  # two talkers
    pre = {e["id"]: e for e in _manifest(corpus, "pretrain", "train")}
    asr = _manifest(corpus, "asr", "train")[0]
    assert pre[asr["id"]]["alignment"] == asr["alignment"]


def test_phone_segments_from_phoneme_events():
    from speechssl.data.synth.espeak import phone_segments

    # eSpeak's events: (ms, IPA name); pauses have no name; "l" shares its instant
    events = [(48, "t"), (88, "ˈɛ"), (347, "l"), (347, "v"), (411, ""), (443, "ˈuː"),
              (500, "")]
    assert phone_segments(events, 0.6) == [("t", 0.048, 0.088), ("ɛ", 0.088, 0.347),
                                           ("l", 0.347, 0.347), ("v", 0.347, 0.411),
                                           ("uː", 0.443, 0.5)]
    assert phone_segments([(10, "a")], 0.3) == [("a", 0.01, 0.3)]  # the last ends at the end


def test_retime_scales_shifts_and_clips():
    def same(got, want):
        assert [p for p, _, _ in got] == [p for p, _, _ in want]
        assert [t for _, s, e in got for t in (s, e)] == pytest.approx(
            [t for _, s, e in want for t in (s, e)])

    phones = [("a", 0.0, 0.1), ("l", 0.1, 0.1), ("b", 0.1, 0.3), ("c", 0.3, 0.5)]
    same(gen._retime(phones, duration=0.4, scale=0.5, shift=0.1),
         [("a", 0.1, 0.15), ("l", 0.15, 0.15), ("b", 0.15, 0.25), ("c", 0.25, 0.35)])
    # trimming 0.15 s: "a" and "l" are cut away, "b" cut short, "c" clipped at the end
    same(gen._retime(phones, duration=0.3, shift=-0.15), [("b", 0.0, 0.15), ("c", 0.15, 0.3)])
    assert gen._speed_time_scale(1.1) == pytest.approx(1 / 1.1)


def test_speaker_partitions(corpus):
    meta = json.loads((corpus / "meta.json").read_text())
    spl = {k: set(v) for k, v in meta["speaker_splits"].items()}
    for sub in SPEAKER_DISJOINT:
        for split in ("train", "dev", "test"):
            for e in _manifest(corpus, sub, split):
                spks = e["speakers"] if sub == "sd" else [e["speaker"]]
                assert set(spks) <= spl[split], (sub, split, e["id"])
    sid = {split: {e["speaker"] for e in _manifest(corpus, "sid", split)} for split in ("train", "dev", "test")}
    assert sid["train"] == sid["dev"] == sid["test"] == set(meta["speakers"])
    assert {e["speaker"] for e in _manifest(corpus, "asv", "train")} <= spl["train"]
    test_spk = {e["speaker"] for e in _manifest(corpus, "asv", "test")}
    assert test_spk <= spl["dev"] | spl["test"] and len(test_spk) > 2
    # SID is tested on sessions never trained on (VoxCeleb1 holds out whole videos)
    sessions = {split: {e["session"] for e in _manifest(corpus, "sid", split)}
                for split in ("train", "dev", "test")}
    assert not sessions["train"] & sessions["dev"] and not sessions["train"] & sessions["test"]
    assert not sessions["dev"] & sessions["test"]


def test_asv_trials(corpus):
    entries = _manifest(corpus, "asv", "test")
    test = {e["id"]: e["speaker"] for e in entries}
    session = {e["id"]: e["session"] for e in entries}
    lines = (corpus / "manifests" / "asv" / "trials.txt").read_text().splitlines()
    assert lines
    n_target = 0
    for line in lines:
        lab, a, b = line.split(" ")
        assert lab in ("0", "1") and a in test and b in test and a != b
        assert (test[a] == test[b]) == (lab == "1")
        n_target += lab == "1"
        if lab == "1":  # every tiny test speaker has several sessions: targets cross them
            assert session[a] != session[b], line
    assert n_target * 2 == len(lines)


# ---------------------------------------------------------------------------
# determinism / robustness
# ---------------------------------------------------------------------------

def test_deterministic_across_worker_counts(corpus, tmp_path):
    other = ensure_corpus(tmp_path, "tiny", seed=0, num_workers=1, progress=False)
    assert _tree_hashes(other) == _tree_hashes(corpus)


def test_existing_corpus_returned_without_regeneration(corpus, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("should not regenerate")
    monkeypatch.setattr(gen, "generate_corpus", boom)
    assert ensure_corpus(corpus.parent, "tiny", seed=0, progress=False) == corpus


def test_interrupted_generation_leaves_no_corpus(tmp_path, monkeypatch):
    name = corpus_dir_name("tiny", 1)
    stale = tmp_path / f"{name}.partial-999999"  # as left by a killed process
    (stale / "wav").mkdir(parents=True)
    real = gen.render_item

    def flaky(item):
        if item["id"] == "sid-dev-000010":
            raise RuntimeError("simulated crash")
        return real(item)

    monkeypatch.setattr(gen, "render_item", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ensure_corpus(tmp_path, "tiny", seed=1, num_workers=2, progress=False)
    assert not (tmp_path / name).exists()
    assert not list(tmp_path.glob(f"{name}.partial-*")), list(tmp_path.iterdir())
    monkeypatch.setattr(gen, "render_item", real)
    (stale / "wav").mkdir(parents=True)
    out = ensure_corpus(tmp_path, "tiny", seed=1, num_workers=2, progress=False)
    assert out == tmp_path / name and (out / "meta.json").is_file()
    assert not list(tmp_path.glob(f"{name}.partial-*"))
    assert _manifest(out, "sid", "dev")


def test_concurrent_callers(tmp_path):
    code = ("import sys; from speechssl.data.synth import ensure_corpus; "
            "print(ensure_corpus(sys.argv[1], 'tiny', seed=2, num_workers=1, progress=False))")
    root = Path(__file__).resolve().parents[1]
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=root) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (o, e) in zip(procs, outs, strict=True):
        assert p.returncode == 0, e
        assert o.strip() == str(tmp_path / "synth-tiny-seed2")
    assert (tmp_path / "synth-tiny-seed2" / "meta.json").is_file()
    assert not list(tmp_path.glob("*.partial-*"))


def test_bad_size():
    with pytest.raises(ValueError) as ei:
        ensure_corpus("/nonexistent-should-not-be-created", "huge")
    for s in SIZES:
        assert s in str(ei.value)
    assert not Path("/nonexistent-should-not-be-created").exists()


def test_sizes_table():
    assert {"tiny", "default", "large"} <= set(SIZES)
    for size, table in SIZES.items():
        for sub, splits in SUBSET_SPLITS.items():
            if sub in ("pretrain", "qbe"):
                continue
            assert set(splits) == set(table[sub]), (size, sub)
            assert all(n > 0 for n in table[sub].values())
        assert table["sid"]["dev"] >= 48 and table["sid"]["test"] >= 48
        assert all(n >= 12 for n in table["ks"].values())


# ---------------------------------------------------------------------------
# grammar
# ---------------------------------------------------------------------------

def test_grammar_texts():
    rng = np.random.default_rng(0)
    vocab = set()
    for _ in range(300):
        t = G.sentence(rng)
        assert TEXT_RE.match(t), t
        vocab.update(t.split())
    assert len(G.vocabulary()) >= 300 and len(vocab) > 250
    for term in G.content_words()[:10]:
        assert term in G.sentence(rng, force_word=term).split()
    for _ in range(100):
        intent, text, slots = G.slot_utterance(rng)
        assert TEXT_RE.match(text)
        for s in slots:
            assert text[s["start"]:s["end"]] == s["value"]
    for it in G.INTENTS:
        assert TEXT_RE.match(G.intent_utterance(rng, it))
    a = [G.sentence(np.random.default_rng([1, 2, 3])) for _ in range(2)]
    assert a[0] == a[1]


# ---------------------------------------------------------------------------
# augmentation
# ---------------------------------------------------------------------------

def _tone(n=16000):
    t = np.arange(n) / 16000
    return 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))


@pytest.mark.parametrize("kind", list(A.NOISE_KINDS))
@pytest.mark.parametrize("snr", [-5.0, 0.0, 12.5, 30.0])
def test_add_noise_snr(kind, snr):
    x = _tone()
    y = A.add_noise(x, np.random.default_rng(3), snr, kind=kind)
    assert y.shape == x.shape
    assert abs(A.snr_db(x, y) - snr) < 0.1
    y2 = A.add_noise(x, np.random.default_rng(3), snr, kind=kind)
    assert np.array_equal(y, y2)


def test_add_noise_babble_and_torch():
    import torch

    rng = np.random.default_rng(0)
    srcs = [_tone(5000) * (k + 1) for k in range(3)]
    bab = A.babble(srcs, 16000, rng)
    assert abs(A.power(bab) - 1.0) < 1e-6
    x = _tone()
    y = A.add_noise(x, np.random.default_rng(1), 7.0, noise=bab)
    assert abs(A.snr_db(x, y) - 7.0) < 0.1
    xt = torch.tensor(x, dtype=torch.float32)
    yt = A.add_noise(xt, np.random.default_rng(1), 7.0)
    assert isinstance(yt, torch.Tensor) and yt.dtype == torch.float32 and yt.shape == xt.shape
    assert abs(A.snr_db(x, yt.double().numpy()) - 7.0) < 0.1


def test_colored_noise_spectrum():
    rng = np.random.default_rng(0)
    def low_high(kind):
        p = np.abs(np.fft.rfft(A.colored_noise(32000, rng, kind))) ** 2
        return p[1:1000].sum() / p[-1000:].sum()
    assert low_high("brown") > low_high("pink") > low_high("white") > low_high("blue")
    with pytest.raises(ValueError):
        A.colored_noise(10, rng, "purple")


def test_rir():
    rir = A.synthetic_rir(np.random.default_rng(0), 16000, rt60=0.5)
    assert len(rir) == 8000
    assert abs(np.sum(rir ** 2) - 1.0) < 1e-9
    assert np.argmax(np.abs(rir)) == 0
    e = rir[1:] ** 2
    q = len(e) // 4
    quarters = [e[i * q:(i + 1) * q].sum() for i in range(4)]
    assert quarters[0] > quarters[1] > quarters[2] > quarters[3]
    # 60 dB of decay over rt60: the last tenth is far below the first tenth
    assert e[-800:].mean() < 1e-3 * e[100:900].mean()
    assert np.array_equal(rir, A.synthetic_rir(np.random.default_rng(0), 16000, rt60=0.5))
    x = _tone()
    y = A.reverberate(x, rir)
    assert y.shape == x.shape and abs(A.power(y) - A.power(x)) < 1e-9


@pytest.mark.parametrize("factor", [0.9, 0.95, 1.0, 1.07, 1.1])
def test_speed_perturb(factor):
    x = _tone(16000)
    y = A.speed_perturb(x, factor)
    assert abs(len(y) - len(x) / factor) <= 1
    assert len(y) == A.speed_perturbed_length(len(x), factor)
    assert np.array_equal(y, A.speed_perturb(x, factor))
    if factor != 1.0:  # the 220 Hz tone moves to 220 * factor Hz
        spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
        f_peak = np.argmax(spec) * 16000 / len(y)
        assert abs(f_peak - 220 * factor) < 3


# ---------------------------------------------------------------------------
# speakers and recording sessions
# ---------------------------------------------------------------------------

def test_speaker_inventory():
    from speechssl.data.synth import speakers as V

    big = V.speaker_splits(gen.SPEAKER_COUNTS["default"])
    assert [len(big[s]) for s in ("train", "dev", "test")] == [200, 50, 50]
    assert gen.SPEAKER_COUNTS["default"] >= 250
    assert gen.SPEAKER_COUNTS["large"] > gen.SPEAKER_COUNTS["default"] > gen.SPEAKER_COUNTS["tiny"]
    for ids in big.values():  # gender-balanced splits
        genders = [V.SPEAKER_BY_ID[i].gender for i in ids]
        assert genders.count("male") == genders.count("female")
    # a smaller size uses a prefix of the same inventory, each speaker in the same split
    small = V.speaker_splits(gen.SPEAKER_COUNTS["tiny"])
    for split, ids in small.items():
        assert set(ids) <= set(big[split])
    assert V._draw_speaker(7) == V.SPEAKERS[7]  # fixed: a speaker is drawn from its index
    with pytest.raises(ValueError, match="even number"):
        V.inventory(V.MAX_SPEAKERS + 2)
    # continuous parameters: no grid of a few values
    spk = V.inventory(300)
    assert len({s.pitch for s in spk}) > 60 and len({s.formant for s in spk}) > 200
    assert len({s.rate for s in spk}) > 40
    text = V.variant_text(spk[0])
    for key in ("pitch", "formant 8", "tone", "consonants", "voicing", "flutter 0", "roughness 0"):
        assert key in text


def test_variant_is_applied_and_does_not_linger(tmp_path):
    """A speaker's variant changes the voice, and leaves no file behind (eSpeak lists at most
    350 voices, so variants are handed over one synthesis at a time)."""
    from speechssl.data.synth import speakers as V
    from speechssl.data.synth.espeak import get_engine, writable_data_dir

    data = writable_data_dir()
    eng = get_engine(data)
    plain, _ = eng.synth_aligned("hello there")
    a1, _ = eng.synth_aligned("hello there", V.VOICE, V.variant_text(V.SPEAKERS[0]))
    b, _ = eng.synth_aligned("hello there", V.VOICE, V.variant_text(V.SPEAKERS[1]))
    a2, _ = eng.synth_aligned("hello there", V.VOICE, V.variant_text(V.SPEAKERS[0]))
    assert np.array_equal(a1, a2)
    assert not (len(a1) == len(b) and np.array_equal(a1, b))
    assert not (len(a1) == len(plain) and np.array_equal(a1, plain))
    # this process's slot only: another test worker may be synthesizing with its own slot now
    assert not (data / "voices" / "!v" / f"speechssl-{os.getpid()}").exists()


def test_session_plan_and_channel():
    from scipy.signal import sosfreqz

    from speechssl.data.synth import sessions as S

    a = S.plan_session(0, "spk0003", 3, 2)
    assert a == S.plan_session(0, "spk0003", 3, 2) and a["id"] == "spk0003-s2"
    assert a != S.plan_session(1, "spk0003", 3, 2)  # sessions depend on the corpus seed
    plans = [S.plan_session(0, f"spk{i:04d}", i, k) for i in range(40) for k in range(6)]
    assert {p["band"] for p in plans} == set(S.BANDS)
    assert 0.4 < np.mean(["rt60" in p for p in plans]) < 0.9
    # the microphone's peaking filters reach their gain at their centre frequency
    flat = {"highpass": 20.0, "eq": [[1000.0, 9.0, 1.0]], "band": "full"}
    w, h = sosfreqz(S.channel_filter(flat, 16000), worN=[1000.0, 6000.0], fs=16000)
    assert 20 * np.log10(abs(h[0])) == pytest.approx(9.0, abs=0.2)
    assert abs(20 * np.log10(abs(h[1]))) < 1.0
    # telephone: 300-3400 Hz, companded; out-of-band energy is gone
    phone = dict(flat, eq=[], band="telephone")
    w, h = sosfreqz(S.channel_filter(phone, 16000), worN=[100.0, 1000.0, 6000.0], fs=16000)
    db = 20 * np.log10(np.abs(h))
    assert db[1] > -1.0 and db[0] < -20.0 and db[2] < -40.0
    x = 0.1 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    y = S.mu_law(x)
    assert 25 < 10 * np.log10(A.power(x) / A.power(y - x)) < 45  # 8-bit mu-law: ~38 dB


def test_sessions_vary_more_than_speakers():
    """Issue 21's premise: the long-term spectrum of two sessions of one speaker differs more
    than that of two speakers in one session, so the mean spectrum does not name the
    speaker. Mean log-mel (gain removed) of one sentence, same-gender speakers."""
    import torch
    import torchaudio
    from scipy.signal import resample_poly

    from speechssl.data.synth import sessions as S
    from speechssl.data.synth import speakers as V
    from speechssl.data.synth.espeak import get_engine, writable_data_dir

    eng = get_engine(writable_data_dir())

    def spectrum(i: int, session: dict) -> np.ndarray:
        raw, _ = eng.synth_aligned("the quick brown fox was reading three books", V.VOICE,
                                   V.variant_text(V.SPEAKERS[i]), rand_seed=1)
        x = S.room(resample_poly(raw.astype(np.float64), 320, 441), session, 16000)
        x = S.record(x, session, np.random.default_rng(0), 16000)
        fb = torchaudio.compliance.kaldi.fbank(torch.tensor(x, dtype=torch.float32)[None] * 32768,
                                               num_mel_bins=80).mean(0).numpy()
        return fb - fb.mean()

    sessions = {i: [S.plan_session(0, f"spk{i:04d}", i, k) for k in range(2)] for i in range(6)}
    same_speaker, same_session = [], []
    for i in range(4):  # speakers i and i + 2 share a gender
        a0, a1 = spectrum(i, sessions[i][0]), spectrum(i, sessions[i][1])
        b0 = spectrum(i + 2, sessions[i][0])
        same_speaker.append(np.linalg.norm(a0 - a1))
        same_session.append(np.linalg.norm(a0 - b0))
    assert np.mean(same_speaker) > 1.2 * np.mean(same_session), (same_speaker, same_session)


def test_old_format_is_generated_again(tmp_path, monkeypatch, capsys):
    final = tmp_path / corpus_dir_name("tiny", 0)
    final.mkdir()
    (final / "meta.json").write_text(json.dumps({"format_version": 2}))
    calls = []
    monkeypatch.setattr(gen, "_generate_into", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(gen, "ensure_text_corpus", lambda *a, **k: None)
    ensure_corpus(tmp_path, "tiny", seed=0, progress=False)
    assert calls and "format 2" in capsys.readouterr().err
