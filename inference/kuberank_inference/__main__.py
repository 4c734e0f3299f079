"""`python -m kuberank_inference` runs the server (the same as kuberank-inference)."""

import sys

from kuberank_inference.cli import main

# the guard matters: the model process (multiprocessing spawn) re-imports this module
if __name__ == "__main__":
    sys.exit(main())
