"""`python -m kuberank_inference` runs the server (the same as kuberank-inference)."""

import sys

from kuberank_inference.cli import main

sys.exit(main())
