"""`python -m speechssl upstream=apc downstream=asr`: the same command line as run.py."""

from speechssl.cli import cli

if __name__ == "__main__":
    cli()
