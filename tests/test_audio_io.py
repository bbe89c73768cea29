"""Tests for audio loading/saving and JSONL manifests."""

import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from speechssl.data.audio import load_audio, save_audio
from speechssl.data.manifest import read_manifest, write_manifest
from speechssl.errors import AudioError, ManifestError, SpeechSSLError


def _tone(n: int, sr: int = 16000, freq: float = 440.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(n) / sr)).astype(np.float32)


# ---------------------------------------------------------------- audio


def test_save_load_round_trip(tmp_path):
    wav = torch.from_numpy(_tone(8000))
    path = tmp_path / "sub" / "a.wav"
    save_audio(path, wav)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    out = load_audio(path)
    assert out.dtype == torch.float32 and out.shape == (8000,)
    assert torch.allclose(out, wav, atol=1 / 2**15 + 1e-6)
    assert [p.name for p in path.parent.iterdir()] == ["a.wav"]  # no temp file left


def test_save_accepts_numpy_and_clips(tmp_path):
    path = tmp_path / "b.wav"
    save_audio(path, np.array([2.0, -2.0, 0.25], dtype=np.float64))
    out = load_audio(path)
    assert out[0] > 0.999 and out[1] < -0.999 and abs(out[2] - 0.25) < 1e-4


def test_stereo_is_downmixed(tmp_path):
    left = np.full(1600, 0.5, dtype=np.float32)
    right = np.full(1600, -0.25, dtype=np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(str(path), np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    out = load_audio(path)
    assert out.shape == (1600,)
    assert torch.allclose(out, torch.full((1600,), 0.125))


@pytest.mark.parametrize("rate", [8000, 22050])
def test_resampled_to_target_rate(tmp_path, rate):
    path = tmp_path / f"r{rate}.wav"
    sf.write(str(path), _tone(rate, sr=rate), rate)  # exactly 1 second
    out = load_audio(path, sample_rate=16000)
    assert out.shape == (16000,)
    assert out.abs().max() > 0.4


def _assert_audio_error(path, match):
    with pytest.raises(AudioError) as info:
        load_audio(path)
    msg = str(info.value)
    assert msg.startswith(str(path)) and match in msg, msg
    assert isinstance(info.value, SpeechSSLError)


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    _assert_audio_error(path, "cannot read audio")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(str(path), np.zeros(0, dtype=np.float32), 16000)
    _assert_audio_error(path, "zero samples")


def test_missing_file(tmp_path):
    _assert_audio_error(tmp_path / "nope.wav", "not found")


def test_too_low_sample_rate(tmp_path):
    path = tmp_path / "low.wav"
    sf.write(str(path), _tone(4000, sr=4000), 4000)
    _assert_audio_error(path, "sample rate 4000 Hz is too low")


def test_non_finite_samples(tmp_path):
    path = tmp_path / "nan.wav"
    data = _tone(100)
    data[10] = np.nan
    sf.write(str(path), data, 16000, subtype="FLOAT")
    _assert_audio_error(path, "non-finite")


# ---------------------------------------------------------------- manifests


def _write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    save_audio(root / "wav" / "u1.wav", _tone(1600))
    save_audio(root / "wav" / "u2.wav", _tone(3200))
    return root


def _line(uid, path, duration=0.1, **extra):
    return json.dumps({"id": uid, "path": path, "duration": duration, **extra})


def test_read_manifest_resolves_paths(corpus, tmp_path):
    man = _write_lines(
        tmp_path / "m" / "train.jsonl",
        [
            _line("u1", "wav/u1.wav", text="hi"),
            "",
            _line("u2", str(corpus / "wav" / "u2.wav"), 0.2),
        ],
    )
    items = read_manifest(man, root=corpus)
    assert [it["id"] for it in items] == ["u1", "u2"]
    assert items[0]["path"] == str(corpus / "wav" / "u1.wav")
    assert items[1]["path"] == str(corpus / "wav" / "u2.wav")
    assert [it["_line"] for it in items] == [1, 3]
    assert items[0]["_manifest"] == str(man)
    assert items[0]["text"] == "hi"


def test_read_manifest_default_root_is_manifest_dir(corpus):
    man = _write_lines(corpus / "dev.jsonl", [_line("u1", "wav/u1.wav")])
    assert read_manifest(man)[0]["path"] == str(corpus / "wav" / "u1.wav")


@pytest.mark.parametrize(
    "lines, bad_line, match",
    [
        ([_line("u1", "wav/u1.wav"), '{"id": "u2", "path": '], 2, "invalid JSON"),
        ([_line("u1", "wav/u1.wav"), "[1, 2]"], 2, "expected a JSON object"),
        (['{"id": "u1", "path": "wav/u1.wav"}'], 1, "missing required field 'duration'"),
        ([_line("u1", "wav/u1.wav", duration="1.0")], 1, "'duration' must be"),
        ([_line(7, "wav/u1.wav")], 1, "'id' must be str"),
        ([_line("u1", "wav/u1.wav", duration=0)], 1, "duration must be > 0"),
        ([_line("u1", "wav/u1.wav"), "", _line("u1", "wav/u2.wav")], 3, "first at"),
        ([_line("u1", "wav/u1.wav"), _line("u3", "wav/u3.wav")], 2, "audio file not found"),
    ],
)
def test_manifest_errors_name_file_and_line(corpus, lines, bad_line, match):
    man = _write_lines(corpus / "bad.jsonl", lines)
    with pytest.raises(ManifestError) as info:
        read_manifest(man)
    msg = str(info.value)
    assert f"{man}:{bad_line}:" in msg and match in msg, msg


def test_duplicate_id_names_both_lines(corpus):
    man = _write_lines(corpus / "dup.jsonl", [_line("u1", "wav/u1.wav"), _line("u1", "wav/u2.wav")])
    with pytest.raises(ManifestError, match="duplicate id") as info:
        read_manifest(man)
    assert f"{man}:2" in str(info.value) and f"{man}:1" in str(info.value)


def test_missing_audio_message_names_audio_path(corpus):
    man = _write_lines(corpus / "m.jsonl", [_line("u3", "wav/u3.wav")])
    with pytest.raises(ManifestError, match=str(corpus / "wav" / "u3.wav")):
        read_manifest(man)
    assert read_manifest(man, check_files=False)[0]["path"] == str(corpus / "wav" / "u3.wav")


def test_missing_and_empty_manifest(tmp_path):
    with pytest.raises(ManifestError, match="not found") as info:
        read_manifest(tmp_path / "none.jsonl")
    assert str(tmp_path / "none.jsonl") in str(info.value)
    empty = _write_lines(tmp_path / "empty.jsonl", ["", "  "])
    with pytest.raises(ManifestError, match="no items"):
        read_manifest(empty)


def test_required_fields_are_configurable(corpus):
    man = _write_lines(corpus / "t.jsonl", ['{"id": "x", "label": 3}'])
    assert read_manifest(man, required=("id", "label"))[0]["label"] == 3
    with pytest.raises(ManifestError, match=f"{man}:1: missing required field 'path'"):
        read_manifest(man)


def test_write_manifest_round_trip(corpus):
    items = [
        {"id": "u1", "path": "wav/u1.wav", "duration": 0.1, "text": "é", "_line": 5},
        {"path": "wav/u2.wav", "id": "u2", "duration": 0.2, "_manifest": "x"},
    ]
    out = corpus / "out" / "w.jsonl"
    write_manifest(out, items)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == '{"duration": 0.1, "id": "u1", "path": "wav/u1.wav", "text": "é"}'
    assert json.loads(lines[1]) == {"duration": 0.2, "id": "u2", "path": "wav/u2.wav"}
    assert os.listdir(out.parent) == ["w.jsonl"]
    back = read_manifest(out, root=corpus)
    assert [it["id"] for it in back] == ["u1", "u2"]
