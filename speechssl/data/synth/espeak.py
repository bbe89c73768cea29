"""Minimal ctypes binding to eSpeak NG (as shipped by the ``espeakng-loader`` wheel).

Only what the synthetic corpus needs: synchronous synthesis into a numpy buffer with
the time of every phoneme (eSpeak's phoneme events), voice / parameter selection and
IPA phonemisation.  eSpeak keeps global state,
so the library is initialised once per process (:func:`get_engine`).  A writable
data directory (:func:`writable_data_dir`) may be passed on first use so that voice
variants (:mod:`speechssl.data.synth.speakers`) can be applied.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import tempfile
import threading
import unicodedata
from pathlib import Path

import numpy as np

# speak_lib.h constants
AUDIO_OUTPUT_SYNCHRONOUS = 2
espeakCHARS_UTF8 = 1
espeakPHONEMES_IPA = 0x02
POS_CHARACTER = 1
espeakSSML = 0x10

espeakRATE = 1
espeakVOLUME = 2
espeakPITCH = 3
espeakRANGE = 4
espeakWORDGAP = 7

espeakINITIALIZE_PHONEME_EVENTS = 0x0001
espeakINITIALIZE_PHONEME_IPA = 0x0002
espeakEVENT_LIST_TERMINATED = 0
espeakEVENT_PHONEME = 7

NATIVE_SAMPLE_RATE = 22050

# stress / boundary / tie / tone marks removed from phoneme strings
_STRIP_MARKS = set("ˈˌ.%‖|‿͡'\u0361\u035c-") | {"ˑ"}


class _EspeakEvent(ctypes.Structure):
    """``espeak_EVENT`` of speak_lib.h (the ``id`` union read as its 8-byte string)."""
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_EspeakEvent)
)


def default_data_dir() -> Path:
    """The ``espeak-ng-data`` directory shipped with espeakng-loader."""
    try:
        import espeakng_loader
    except ImportError as e:  # pragma: no cover - environment problem
        raise RuntimeError("espeakng-loader is not installed (pip install espeakng-loader)") from e
    return Path(espeakng_loader.get_data_path())


def writable_data_dir(base_dir: str | os.PathLike | None = None) -> Path:
    """An ``espeak-ng-data`` dir whose ``voices/!v`` this process may write voice variants
    into: symlinks to the shipped data, made once under the system temp dir (keyed by the
    shipped dir's path) and shared by every process."""
    src = default_data_dir()
    base = Path(base_dir) if base_dir is not None else \
        Path(tempfile.gettempdir()) / f"speechssl-espeak-{os.getuid()}"
    key = hashlib.sha256(f"v2 {src.resolve()}".encode()).hexdigest()[:16]
    target = base / key / "espeak-ng-data"
    if (target / "voices" / "!v" / ".complete").exists():
        return target
    base.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".stage-", dir=base))
    try:
        data = stage / "espeak-ng-data"
        data.mkdir()
        for p in src.iterdir():
            if p.name != "voices":
                os.symlink(p.resolve(), data / p.name)
        (data / "voices").mkdir()
        for p in (src / "voices").iterdir():
            if p.name != "!v":
                os.symlink(p.resolve(), data / "voices" / p.name)
        vdir = data / "voices" / "!v"
        vdir.mkdir()
        for p in (src / "voices" / "!v").iterdir():
            os.symlink(p.resolve(), vdir / p.name)
        (vdir / ".complete").write_text("ok\n")
        try:
            os.rename(stage, target.parent)
        except OSError:
            if not (target / "voices" / "!v" / ".complete").exists():  # lost a race with a broken winner
                raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return target


def library_path() -> str:
    try:
        import espeakng_loader
    except ImportError as e:  # pragma: no cover
        raise RuntimeError("espeakng-loader is not installed (pip install espeakng-loader)") from e
    return espeakng_loader.get_library_path()


class Espeak:
    """A process-wide eSpeak NG engine in synchronous mode."""

    def __init__(self, data_dir: str | os.PathLike | None = None):
        data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        if data_dir.name != "espeak-ng-data":
            raise RuntimeError(f"eSpeak data dir must be named 'espeak-ng-data', got {data_dir}")
        try:
            lib = ctypes.CDLL(library_path())
        except OSError as e:
            raise RuntimeError(f"could not load the eSpeak NG library: {e}") from e
        self.lib = lib
        self.data_dir = data_dir
        self._lock = threading.Lock()
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None

        # phoneme events (with IPA names) leave the audio bit-identical
        options = espeakINITIALIZE_PHONEME_EVENTS | espeakINITIALIZE_PHONEME_IPA
        sr = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 200, str(data_dir.parent).encode(), options)
        if sr <= 0:
            raise RuntimeError(f"espeak_Initialize failed (data dir {data_dir})")
        self.sample_rate = int(sr)
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, str]] = []  # (audio position in ms, phoneme name)

        def _cb(wav, n, events):
            if n > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            i = 0
            while events and events[i].type != espeakEVENT_LIST_TERMINATED:
                if events[i].type == espeakEVENT_PHONEME:
                    name = events[i].id.decode("utf-8", errors="replace")
                    self._events.append((int(events[i].audio_position), name))
                i += 1
            return 0

        self._cb = _SYNTH_CALLBACK(_cb)  # keep a reference alive
        lib.espeak_SetSynthCallback(self._cb)
        self.version = lib.espeak_Info(None).decode()
        self._voice: str | None = None
        try:
            self._libc = ctypes.CDLL(None)
        except OSError:  # pragma: no cover
            self._libc = None

    # ------------------------------------------------------------------
    def set_voice(self, name: str) -> None:
        # Always (re)load: parameter changes made while a voice stays selected leave
        # state behind that makes the next utterance depend on the previous one.
        err = self.lib.espeak_SetVoiceByName(name.encode())
        if err != 0:
            raise RuntimeError(f"eSpeak could not select voice {name!r} (error {err})")
        self._voice = name

    def _select(self, voice: str, variant: str | None) -> None:
        """Select ``voice``, with ``variant`` (the text of a voice variant file) applied when
        given. The variant is written to a file of this process's own name in the data
        dir's ``voices/!v``, read by eSpeak while selecting, and removed again: eSpeak opens
        a variant by path, so any number of them can be used (its voice list holds 350)."""
        if variant is None:
            self.set_voice(voice)
            return
        slot = f"speechssl-{os.getpid()}"
        path = self.data_dir / "voices" / "!v" / slot
        try:
            path.write_text(variant)
        except OSError as e:
            raise RuntimeError(f"cannot write an eSpeak voice variant into {path.parent} "
                               f"(use speechssl.data.synth.espeak.writable_data_dir()): {e}") from e
        try:
            self.set_voice(f"{voice}+{slot}")
        finally:
            path.unlink(missing_ok=True)

    def synth_aligned(
        self,
        text: str,
        voice: str = "en-us",
        variant: str | None = None,
        rate: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
        volume: int = 100,
        wordgap: int = 0,
        rand_seed: int = 0,
        ssml: bool = False,
    ) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
        """Synthesize ``text`` (SSML markup, e.g. ``<emphasis>``, with ``ssml=True``) with
        ``voice``, changed by the voice ``variant`` file text if given (:meth:`_select`).

        Returns float32 samples in [-1, 1] at :attr:`sample_rate` and the phone segments
        ``(phone, start_s, end_s)`` eSpeak reports while speaking (stress marks removed, as
        in :meth:`phonemes`); a phone ends where the next phoneme event (a phone or a
        pause) starts."""
        with self._lock:
            self._select(voice, variant)
            for p, v in ((espeakRATE, rate), (espeakPITCH, pitch), (espeakRANGE, pitch_range),
                         (espeakVOLUME, volume), (espeakWORDGAP, wordgap)):
                self.lib.espeak_SetParameter(p, int(v), 0)
            # eSpeak's internal noise generators must not depend on what was spoken before
            self.lib.espeak_ng_SetRandSeed(int(rand_seed) & 0x7FFFFFFF)
            if self._libc is not None:
                self._libc.srand(ctypes.c_uint(int(rand_seed) & 0xFFFFFFFF))
            self._chunks, self._events = [], []
            buf = ctypes.create_string_buffer(text.encode("utf-8"))
            flags = espeakCHARS_UTF8 | (espeakSSML if ssml else 0)
            err = self.lib.espeak_Synth(buf, len(buf), 0, POS_CHARACTER, 0, flags, None, None)
            if err != 0:
                raise RuntimeError(f"espeak_Synth failed (error {err}) for text {text!r} voice {voice!r}")
            self.lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
            events, self._events = self._events, []
        if not chunks:
            raise RuntimeError(f"eSpeak produced no audio for text {text!r} voice {voice!r}")
        audio = np.concatenate(chunks).astype(np.float32) / 32768.0
        return audio, phone_segments(events, len(audio) / self.sample_rate)

    def phonemes(self, text: str, voice: str = "en-us") -> list[str]:
        """IPA phones of ``text`` (stress, syllable and word-boundary marks removed)."""
        with self._lock:
            self.set_voice(voice)
            buf = ctypes.create_string_buffer(text.encode("utf-8"))
            ptr = ctypes.c_void_p(ctypes.addressof(buf))
            mode = espeakPHONEMES_IPA | (ord(" ") << 8)
            parts = []
            guard = 0
            while ptr.value is not None and guard < 1000:
                out = self.lib.espeak_TextToPhonemes(ctypes.byref(ptr), espeakCHARS_UTF8, mode)
                if out:
                    parts.append(out.decode("utf-8"))
                guard += 1
        return clean_phones(" ".join(parts))


def clean_phones(s: str) -> list[str]:
    """Split an eSpeak IPA string (space separated phones) into a compact phone list."""
    s = unicodedata.normalize("NFC", s)
    phones = []
    for tok in s.split():
        tok = "".join(ch for ch in tok if ch not in _STRIP_MARKS)
        if tok:
            phones.append(tok)
    return phones


def phone_segments(events: list[tuple[int, str]], duration: float) -> list[tuple[str, float, float]]:
    """Phoneme events ``(audio position in ms, IPA name)`` -> ``(phone, start_s, end_s)``.

    Events with an empty name after cleaning (pauses) only end the phone before them;
    the last phone ends at ``duration``.  A phone may have zero length: eSpeak speaks a
    post-vocalic /l/ (``twelve``, ``school``) inside the vowel before it and reports it
    at the same instant as the next phone; it is kept so that the phone sequence is the
    transcription."""
    events = sorted(events, key=lambda e: e[0])
    out = []
    for k, (ms, name) in enumerate(events):
        phone = "".join(clean_phones(name))
        start = min(ms / 1000.0, duration)
        end = min(events[k + 1][0] / 1000.0, duration) if k + 1 < len(events) else duration
        if phone:
            out.append((phone, start, end))
    return out


_ENGINE: Espeak | None = None


def get_engine(data_dir: str | os.PathLike | None = None) -> Espeak:
    """The per-process engine, initialised on first call (``data_dir`` only matters then).

    A forked child inherits the parent's initialised engine (a private copy of the
    library state), which is fine for synchronous synthesis.
    """
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = Espeak(data_dir)
    elif data_dir is not None and Path(data_dir) != _ENGINE.data_dir:
        # eSpeak looks voice variants up in the path given at initialisation and cannot
        # be re-initialised with another one in the same process.
        raise RuntimeError(
            f"eSpeak already initialised with {_ENGINE.data_dir}; cannot switch to {data_dir}"
        )
    return _ENGINE


def espeak_version() -> str:
    """Version string of the eSpeak NG library (does not initialise it)."""
    try:
        lib = ctypes.CDLL(library_path())
    except OSError as e:
        raise RuntimeError(f"could not load the eSpeak NG library: {e}") from e
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p
    return lib.espeak_Info(None).decode()
