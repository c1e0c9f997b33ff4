"""Object detectors (the guide's §6.2): one module per family, each over any cnnkit backbone.

Every module here is imported with the zoo (`cnnkit.models._load_all`), so adding a family is
adding a file. The interface they share is `_base.Detector`.
"""
import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
