"""The frameworks' own models (tests/fixtures/frameworks/) for the importers'
tests: each fixture's checkpoint and configuration, to import as they are or
changed in one place."""

import copy
import glob
import json
import os
import shutil
import tempfile

import yaml

from masknet_tools import checkpoints
from masknet_tools import importers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "frameworks")


class Fixture:
    """One fixture: its folder, meta.json and import arguments."""

    def __init__(self, framework, case):
        self.folder = os.path.join(FIXTURES, framework, case)
        with open(os.path.join(self.folder, "meta.json")) as f:
            self.meta = json.load(f)
        self.framework = framework
        self.args = dict(zip(self.meta["import_args"][::2],
                             self.meta["import_args"][1::2]))

    def path(self, flag):
        """The file of an import argument, e.g. "--config"."""
        return os.path.join(self.folder, self.args[flag]) \
            if flag in self.args else None

    def state(self):
        """The checkpoint's tensors, names as saved."""
        return checkpoints.load_state_dict(self.path("--checkpoint"))

    def config_text(self):
        with open(self.path("--config")) as f:
            return f.read()

    def yaml_config(self):
        return yaml.safe_load(self.config_text())

    def import_(self, state=None, config_text=None, feature_map=None):
        """importers.import_state on the fixture, with the checkpoint,
        configuration text or feature map (a dict) replaced if given.
        Replacements are written beside copies of the fixture's other files,
        so that relative paths in the configuration still resolve."""
        state = self.state() if state is None else state
        if config_text is None and feature_map is None:
            return importers.import_state(
                self.framework, state, self.path("--config"),
                self.path("--feature_map"), self.args.get("--expid"),
                int(self.args.get("--max_ids", 1)))
        with tempfile.TemporaryDirectory() as tmp:
            copy_dir = os.path.join(tmp, "fixture")
            shutil.copytree(self.folder, copy_dir)
            config_path = os.path.join(copy_dir, self.args["--config"])
            if config_text is not None:
                with open(config_path, "w") as f:
                    f.write(config_text)
            feature_map_path = None
            if "--feature_map" in self.args:
                feature_map_path = os.path.join(copy_dir,
                                                self.args["--feature_map"])
                if feature_map is not None:
                    with open(feature_map_path, "w") as f:
                        json.dump(feature_map, f)
            return importers.import_state(
                self.framework, state, config_path, feature_map_path,
                self.args.get("--expid"), int(self.args.get("--max_ids", 1)))

    def import_yaml(self, edit):
        """Imports with the YAML configuration changed by edit(dict) (which
        changes it in place)."""
        changed = copy.deepcopy(self.yaml_config())
        edit(changed)
        return self.import_(config_text=yaml.safe_dump(changed, sort_keys=False))


def cases(framework, served=True):
    """The names of a framework's fixtures the import serves (or refuses)."""
    found = []
    for meta_path in sorted(glob.glob(os.path.join(FIXTURES, framework, "*",
                                                   "meta.json"))):
        with open(meta_path) as f:
            refused = "refused_with" in json.load(f)
        if refused != served:
            found.append(os.path.basename(os.path.dirname(meta_path)))
    return found
