"""kelp dev's loader for Python: one component, built once per toolchain, that runs the Python
sources the version it is published under carries.

`kelp dev` publishes the project's .py files (as JSON: the entry module's name and every
file's text) beside this component, in the manifest's `devSource`; the host hands them over
as the config key `kelp.dev/source`. The first call of an instance imports the entry module
from them (compiled under their own file names, so tracebacks keep the author's lines) and
its `WitWorld().handler` answers from then on. componentize-py snapshots the interpreter per
build (10-20 s); this runs an edit in well under one.

Only for development: production builds are componentized as written.
"""

import importlib
import importlib.abc
import importlib.util
import json
import sys

import wit_world
from wit_world.imports import config

# componentize-py keeps only the modules imported while it builds: import the standard
# library an extension is likely to use now, so the author's code finds it at run time. A
# module missing here is a ModuleNotFoundError under kelp dev only; `kelp dev --full-build`
# builds the author's code as production does.
_PRELOADED = [
    "componentize_py_types", "wit_world.imports.context", "wit_world.imports.secrets",
    "wit_world.imports.http", "wit_world.imports.storage", "wit_world.imports.logging",
    "wit_world.imports.ui_proxy", "wit_world.imports.user", "wit_world.imports.user_v2",
    "wit_world.imports.scheduler", "wit_world.imports.invoicing", "wit_world.imports.clients",
    "wit_world.imports.services", "wit_world.imports.types",
    "abc", "base64", "binascii", "bisect", "calendar", "collections", "collections.abc",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "enum", "fractions",
    "functools", "hashlib", "heapq", "hmac", "html", "http", "http.cookies", "io",
    "ipaddress", "itertools", "json", "math", "numbers", "operator", "random", "re",
    "secrets", "statistics", "string", "struct", "textwrap", "time", "traceback", "typing",
    "unicodedata", "urllib", "urllib.parse", "uuid", "zlib",
]
for _name in _PRELOADED:
    try:
        importlib.import_module(_name)
    except ImportError:
        pass

DEV_SOURCE_KEY = "kelp.dev/source"


class _Sources(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports the author's modules from the carried sources, before anything else."""

    def __init__(self, files):
        self.files = files  # module name -> (file name, text)

    def find_spec(self, name, path=None, target=None):
        if name not in self.files:
            return None
        filename, _ = self.files[name]
        package = filename.endswith("__init__.py")
        return importlib.util.spec_from_loader(name, self, origin=filename, is_package=package)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        filename, text = self.files[module.__name__]
        module.__file__ = filename
        exec(compile(text, filename, "exec"), module.__dict__)


def _load():
    source = config.get(DEV_SOURCE_KEY)
    if source is None:
        raise RuntimeError("this version carries no source: publish it with kelp dev")
    carried = json.loads(source)
    files = {}
    for path, text in carried["files"].items():
        name = path[: -len(".py")].replace("/", ".")
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        files[name] = (path, text)
    sys.meta_path.insert(0, _Sources(files))
    module = importlib.import_module(carried["entry"])
    return module.WitWorld()


_guest = None


class WitWorld(wit_world.WitWorld):
    def handler(self, request):
        global _guest
        if _guest is None:
            _guest = _load()
        return _guest.handler(request)
