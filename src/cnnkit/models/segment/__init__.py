"""Semantic segmentation models: every pixel gets one of K classes.

Every module here is imported with the zoo (`cnnkit.models._load_all`), so adding a family is
adding a file. The interface they share (`_base.SegmentationModel`), which the segmentation task
relies on:

Building
    create_model(name, num_classes=K, in_chans=C, **kwargs). K counts every class, the
    background included (Pascal VOC: 21); labels are 0..K-1 with no shift.

Input
    (B, C, H, W) float, already normalised with default_cfg["mean"/"std"]; any H, W >= 32,
    odd sizes too (models that need a multiple of 16 or 32 zero-pad and crop back inside).

Output
    eval mode: logits (B, K, H, W) at the input size (bilinear upsampling, align_corners=False,
        as torchvision), one plain tensor, so the model exports to ONNX with one output.
    training mode: models with an auxiliary head (default_cfg["aux"] True) return the tuple
        (logits, aux_logits), both (B, K, H, W); others a plain tensor. The task adds
        aux_loss_weight (default_cfg["aux_loss_weight"] = model.aux_loss_weight = 0.5,
        torchvision's reference recipe) times the aux loss; `googlenet.split_aux` and
        `loss_with_aux` accept both forms.
    `model.forward_with_aux(x)` -> (logits, aux_logits or None) in either mode.

default_cfg (make_cfg / adapt_cfg)
    task "segment", input_size (a sensible training size per model: 520 for torchvision's,
    512 for FCN-VGG and U-Net, 128 for the small ones), mean / std (ImageNet), first_conv,
    classifier (module path of the last 1x1 classifier conv), num_classes, aux, aux_loss_weight,
    paper, backbone (the body's name, None for U-Net), tv_name (torchvision's name when the
    build is exactly torchvision's, else None), export True, output_stride (the stride of the
    deepest feature map, before any decoding), architecture. Also: `reset_classifier(K)` and
    `get_classifier()`, as the classifiers have.

Backbones
    Models over a body take `backbone=` any cnnkit classification model name (or a built
    model) with `feature_info`, plus `backbone_args` (U-Net: `encoder=` / `encoder_args`). The
    body's classifier head is dropped; `_base.Encoder` catches the outputs of the stages it
    needs with forward hooks while `forward_features` runs.
      FCN-VGG:        stages at strides 8, 16, 32 (pool3, pool4, pool5 on VGG-16)
      FCN / DeepLabv3: the last stage; aux on the stage before it. `output_stride` 8 or 16 is
                      reached by dilation where the family can dilate: ResNets
                      (`replace_stride_with_dilation`), MobileNetV3 (`dilated`, 16 only).
                      Other bodies cannot dilate and keep their own strides (usually 32);
                      default_cfg["output_stride"] reports what was built, and the ASPP rates
                      scale with it (6 / 12 / 18 times 16 / output stride).
      DeepLabv3+:     the last stage and the stride-4 one (or the finest at stride >= 4).
      LR-ASPP:        the last stage (dilated to 16 where possible) and the stride-8 one.
      U-Net encoder:  one stage per stride (2, 4, 8, 16, 32 for a ResNet) as skips.
    A built model is used as it is (its own strides).

Registered: fcn32s_vgg16, fcn16s_vgg16, fcn8s_vgg16 (fcn.py); fcn_resnet18 / 50 / 101 (fcn.py);
deeplabv3_resnet18 / 50 / 101, deeplabv3_mobilenet_v3_large, deeplabv3plus_resnet18 / 50
(deeplab.py); lraspp_mobilenet_v3_large (lraspp.py); unet, unet_small, unet_resnet18 (unet.py);
plan_unet (nnunet.py: nnU-Net's 2-D / 3-D U-Net built from a plan, task "volume", its own
interface: normalised inputs, deep-supervision lists in training, see the module).
The torchvision-named ones load torchvision's state dicts with
`cnnkit.models.load_torchvision_weights` and then give torchvision's outputs.
"""
import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
