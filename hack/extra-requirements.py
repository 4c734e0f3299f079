"""Print the requirements of kuberank's named extras (and its base dependencies), one a line.

The Dockerfile installs them in a layer of their own, before the source is copied, so a code
change does not reinstall torch. Usage: extra-requirements.py pyproject.toml EXTRA...
"""

import sys
import tomllib


def main(argv: list[str]) -> int:
    with open(argv[1], "rb") as f:
        project = tomllib.load(f)["project"]
    lines = list(project["dependencies"])
    for extra in argv[2:]:
        lines.extend(project["optional-dependencies"][extra])
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
