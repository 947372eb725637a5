"""Build hook: the shipped weights and their model card travel inside the wheel.

``weights/`` at the top of the repository stays the one source of truth (retraining replaces
``weights/vegediff-small.safetensors`` there); building a wheel or an sdist-built wheel copies
whatever that folder holds at build time into ``vegediff_cli/weights/``, where
``vegediff_cli.model.shipped`` looks first. Editable installs read ``weights/`` of the checkout
directly, so nothing is copied for them. Everything else about the package is in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("vegediff-small.safetensors", "MODEL_CARD.md")  # model/shipped.py: SHIPPED_WEIGHTS, MODEL_CARD


class BuildPyWithWeights(build_py):
    """build_py, plus weights/<SHIPPED> -> <build_lib>/vegediff_cli/weights/."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "vegediff_cli" / "weights"
        self.mkpath(str(target))
        for name in SHIPPED:
            source = ROOT / "weights" / name
            if not source.is_file():
                raise SystemExit(f"error: {source} is missing: the wheel must carry the shipped weights "
                                 "(restore weights/ or retrain with scripts/train_weights.py)")
            self.copy_file(str(source), str(target / name), preserve_mode=False)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        packaged = [str(Path(self.build_lib) / "vegediff_cli" / "weights" / name) for name in SHIPPED]
        return [*super().get_outputs(include_bytecode), *packaged]


setup(cmdclass={"build_py": BuildPyWithWeights})
