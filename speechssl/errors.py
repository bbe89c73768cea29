"""Exception types raised by speechssl; messages always name the offending item."""


class SpeechSSLError(Exception):
    """Base class for all speechssl errors."""


class AudioError(SpeechSSLError):
    """Bad, missing, corrupt or empty audio file (message starts with the file path)."""


class ManifestError(SpeechSSLError):
    """Bad manifest file or line (message names ``<manifest path>:<line number>``)."""


class ConfigError(SpeechSSLError):
    """Bad configuration value (message names the config key)."""
