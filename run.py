"""speechssl entry point: `python run.py upstream=apc downstream=asr` (see README.md).
The code is speechssl/cli.py, also run as `python -m speechssl ...` or `speechssl ...`."""

from speechssl.cli import cli

if __name__ == "__main__":
    cli()
