"""Key maps from the ESPNet authors' state_dict layouts to wsi-seg's module names.

One pure function per family (``state_dict -> state_dict``), in the spirit of
timm's ``checkpoint_filter_fn``: the released files of github sacmehta/ESPNet
(ESPNet-C encoders and ESPNet decoders) and sacmehta/EdgeNets (ESPNetv2
segmentation) load with ``strict=True`` after mapping.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Mapping

import torch

_ESP_BRANCH = {"d1": 0, "d2": 1, "d4": 2, "d8": 3, "d16": 4}


def _rename(key: str, rules: list[tuple[str, str]]) -> str:
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def _strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)


# An ESP block once its prefix has been renamed: encoder down-samplers and stage blocks,
# and the decoder's merge block.
_ESP_BLOCK = r"((?:encoder\.)?(?:down\d|stage\d\.\d+)|merge)"


def _esp_block_rules() -> list[tuple[str, str]]:
    """Inside an ESP block: reduce conv, branches, and the final BN + PReLU (a BR
    wrapper ``bn.bn``/``bn.act`` in ESP modules, bare ``bn``/``act`` in down-samplers)."""
    rules = [
        (rf"^{_ESP_BLOCK}\.c1\.conv\.", r"\1.reduce."),
        (rf"^{_ESP_BLOCK}\.bn\.bn\.", r"\1.norm."),
        (rf"^{_ESP_BLOCK}\.bn\.act\.", r"\1.act."),
        (rf"^{_ESP_BLOCK}\.bn\.", r"\1.norm."),
    ]
    for name, index in _ESP_BRANCH.items():
        rules.append((rf"^{_ESP_BLOCK}\.{name}\.conv\.", rf"\1.branches.{index}."))
    return rules


def _espnet_encoder_rules(prefix: str) -> list[tuple[str, str]]:
    p = re.escape(prefix)
    return [
        (rf"^{p}level1\.", f"{prefix}stem."),
        (rf"^{p}b1\.", f"{prefix}fuse1."),
        (rf"^{p}b2\.", f"{prefix}fuse2."),
        (rf"^{p}b3\.", f"{prefix}fuse3."),
        (rf"^{p}classifier\.conv\.", f"{prefix}classifier."),
        (rf"^{p}level2_0\.", f"{prefix}down2."),
        (rf"^{p}level3_0\.", f"{prefix}down3."),
        (rf"^{p}level2\.(\d+)\.", rf"{prefix}stage2.\1."),
        (rf"^{p}level3\.(\d+)\.", rf"{prefix}stage3.\1."),
    ]


_ESPNET_DECODER_RULES = [
    (r"^level3_C\.conv\.", "level2_proj."),
    (r"^br\.", "level3_norm."),
    (r"^conv\.", "level1_fuse."),
    (r"^up_l3\.0\.", "up3."),
    (r"^combine_l2_l3\.0\.", "merge_norm."),
    (r"^combine_l2_l3\.1\.", "merge."),
    (r"^up_l2\.0\.", "up2."),
    (r"^up_l2\.1\.", "up2_norm."),
    (r"^classifier\.", "head."),
]


def espnet_checkpoint_filter(state_dict: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Map an authors' ESPNet (``encoder.*`` keys) or ESPNet-C (bare keys) state_dict."""
    state_dict = _strip_module_prefix(state_dict)
    is_decoder = any(k.startswith("encoder.") for k in state_dict)
    prefix_rules = _espnet_encoder_rules("encoder.") + _ESPNET_DECODER_RULES if is_decoder else _espnet_encoder_rules("")
    rules = prefix_rules + _esp_block_rules()
    return OrderedDict((_rename(k, rules), v) for k, v in state_dict.items())


def _eesp_rules(block: str) -> list[tuple[str, str]]:
    return [
        (rf"^({block})\.proj_1x1\.", r"\1.reduce."),
        (rf"^({block})\.spp_dw\.(\d+)\.conv\.", r"\1.branches.\2."),
        (rf"^({block})\.br_after_cat\.", r"\1.merge_norm."),
        (rf"^({block})\.conv_1x1_exp\.", r"\1.expand."),
        (rf"^({block})\.module_act\.", r"\1.act."),
    ]


def _pyramid_rules(block: str) -> list[tuple[str, str]]:
    return [
        (rf"^({block})\.projection_layer\.cbr\.0\.", r"\1.project.conv."),
        (rf"^({block})\.projection_layer\.cbr\.1\.", r"\1.project.bn."),
        (rf"^({block})\.projection_layer\.cbr\.2\.", r"\1.project.act."),
        (rf"^({block})\.merge_layer\.0\.br\.0\.", r"\1.merge_norm.bn."),
        (rf"^({block})\.merge_layer\.0\.br\.1\.", r"\1.merge_norm.act."),
        (rf"^({block})\.merge_layer\.2\.cbr\.0\.", r"\1.merge.conv."),
        (rf"^({block})\.merge_layer\.2\.cbr\.1\.", r"\1.merge.bn."),
        (rf"^({block})\.merge_layer\.2\.cbr\.2\.", r"\1.merge.act."),
        (rf"^({block})\.merge_layer\.3\.", r"\1.out."),
        (rf"^({block})\.br\.br\.0\.", r"\1.out_norm.bn."),
        (rf"^({block})\.br\.br\.1\.", r"\1.out_norm.act."),
    ]


_ESPNETV2_RULES = [
    (r"^base_net\.level1\.", "stem."),
    (r"^base_net\.level2_0\.", "down2."),
    (r"^base_net\.level3_0\.", "down3."),
    (r"^base_net\.level4_0\.", "down4."),
    (r"^base_net\.level3\.", "stage3."),
    (r"^base_net\.level4\.", "stage4."),
    (r"^(down\d)\.inp_reinf\.", r"\1.reinforce."),
    (r"^bu_dec_l1\.", "pyramid4."),
    (r"^bu_dec_l2\.", "pyramid3."),
    (r"^bu_dec_l3\.", "pyramid2."),
    (r"^bu_dec_l4\.", "pyramid1."),
    (r"^merge_enc_dec_l2\.", "skip3."),
    (r"^merge_enc_dec_l3\.", "skip2."),
    (r"^merge_enc_dec_l4\.", "skip1."),
    (r"^bu_br_l2\.0\.", "norm3.bn."),
    (r"^bu_br_l2\.1\.", "norm3.act."),
    (r"^bu_br_l3\.0\.", "norm2.bn."),
    (r"^bu_br_l3\.1\.", "norm2.act."),
    (r"^bu_br_l4\.0\.", "norm1.bn."),
    (r"^bu_br_l4\.1\.", "norm1.act."),
    (r"^(skip\d)\.wt_layer\.", r"\1.gate."),
    (r"^(skip\d)\.expansion_layer\.cbr\.0\.", r"\1.expand.conv."),
    (r"^(skip\d)\.expansion_layer\.cbr\.1\.", r"\1.expand.bn."),
    (r"^(skip\d)\.expansion_layer\.cbr\.2\.", r"\1.expand.act."),
] + _eesp_rules(r"down\d\.eesp") + _eesp_rules(r"stage\d\.\d+") + _pyramid_rules(r"pyramid\d")


def espnetv2_checkpoint_filter(state_dict: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Map an authors' ESPNetv2 segmentation state_dict (EdgeNets ``ESPNetv2Segmentation``)."""
    state_dict = _strip_module_prefix(state_dict)
    return OrderedDict((_rename(k, _ESPNETV2_RULES), v) for k, v in state_dict.items())


CHECKPOINT_FILTERS = {
    "espnet": espnet_checkpoint_filter,
    "espnet_c": espnet_checkpoint_filter,
    "espnetv2": espnetv2_checkpoint_filter,
}
