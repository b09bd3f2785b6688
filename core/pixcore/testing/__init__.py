"""Contract checks for pixcore components, shipped for plugin authors.

Every first-party plugin tests itself with these functions, and a third-party plugin
should too: each check exercises one interface contract (shapes, padding, invalid
pixels, gradients, summable metric state, ...) and raises :class:`ContractError`
naming the broken rule.

Example (a plugin's ``tests/test_my_task.py``)::

    import my_plugin
    from pixcore.testing import check_task, isolated_manager

    def test_contract():
        check_task("my_task", {"num_classes": 3}, manager=isolated_manager(my_plugin))

Nothing here is registered by default, and importing this module does not need pytest.
"""

from pixcore.testing._augment_checks import PROFILE_ENV as PROFILE_ENV
from pixcore.testing._augment_checks import AlienKind as AlienKind
from pixcore.testing._augment_checks import DepthScaling as DepthScaling
from pixcore.testing._augment_checks import builtin_transforms as builtin_transforms
from pixcore.testing._augment_checks import check_augmentation as check_augmentation
from pixcore.testing._augment_checks import check_augmentation_once as check_augmentation_once
from pixcore.testing._augment_checks import check_target_kind as check_target_kind
from pixcore.testing._augment_checks import load_hypothesis_profile as load_hypothesis_profile
from pixcore.testing._augment_checks import random_sample as random_sample
from pixcore.testing._augment_checks import sample_strategy as sample_strategy
from pixcore.testing._backbone import TINY_BACKBONE_NAME as TINY_BACKBONE_NAME
from pixcore.testing._backbone import TinyBackbone as TinyBackbone
from pixcore.testing._backbone import TinyBackbonePlugin as TinyBackbonePlugin
from pixcore.testing._check_model import check_backbone as check_backbone
from pixcore.testing._check_model import check_head as check_head
from pixcore.testing._check_model import padded_size as padded_size
from pixcore.testing._check_objectives import check_loss as check_loss
from pixcore.testing._check_objectives import check_metric as check_metric
from pixcore.testing._check_task import check_task as check_task
from pixcore.testing._check_weighting import check_weighting as check_weighting
from pixcore.testing._contract import ContractError as ContractError
from pixcore.testing._data import RandomBatch as RandomBatch
from pixcore.testing._data import make_batch as make_batch
from pixcore.testing._data import random_batch as random_batch
from pixcore.testing._data import replace_invalid as replace_invalid
from pixcore.testing._manager import isolated_manager as isolated_manager

__all__ = [
    "PROFILE_ENV",
    "TINY_BACKBONE_NAME",
    "AlienKind",
    "builtin_transforms",
    "check_augmentation",
    "check_augmentation_once",
    "check_backbone",
    "check_head",
    "check_loss",
    "check_metric",
    "check_target_kind",
    "check_task",
    "check_weighting",
    "ContractError",
    "DepthScaling",
    "isolated_manager",
    "load_hypothesis_profile",
    "make_batch",
    "padded_size",
    "random_batch",
    "random_sample",
    "RandomBatch",
    "replace_invalid",
    "sample_strategy",
    "TinyBackbone",
    "TinyBackbonePlugin",
]
