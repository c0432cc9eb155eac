"""The authors' STMask checkpoint layout, generated from the key table of spec stmask.md §6.2 (not
from our model): shared by the converter and architecture tests."""

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
KERNELS = ((3, 3), (3, 5), (5, 3))  # (kh, kw) of the head convs k = 0, 1, 2


def dcn_blocks(blocks: tuple[int, ...], interval: int) -> set[tuple[int, int]]:
    """§2.2 with dcn_layers = [0, n1, n2, n3]: block 0 of stages 1-3, and block i iff i % interval == 0."""
    dcn_layers = (0, *blocks[1:])
    out = set()
    for s, n in enumerate(blocks):
        for i in range(n):
            if (i == 0 and dcn_layers[s] >= n) or (i >= 1 and i + dcn_layers[s] >= n and i % interval == 0):
                out.add((s, i))
    return out


def authors_shapes(depth: int, interval: int, fcb: str = "none", num_classes: int = 41) -> dict[str, tuple]:
    """Key -> shape of an authors' checkpoint, from the table of spec §6.2 (C = num_classes with bg)."""
    blocks = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
    dcn = dcn_blocks(blocks, interval)
    keys: dict[str, tuple] = {"backbone.conv1.weight": (64, 3, 7, 7)}

    def bn(prefix: str, c: int) -> None:
        for n in BN:
            keys[f"{prefix}.{n}"] = () if n == "num_batches_tracked" else (c,)

    bn("backbone.bn1", 64)
    in_ch = 64
    for s, (n, p) in enumerate(zip(blocks, (64, 128, 256, 512))):
        for b in range(n):
            pre = f"backbone.layers.{s}.{b}"
            keys[f"{pre}.conv1.weight"] = (p, in_ch if b == 0 else 4 * p, 1, 1)
            bn(f"{pre}.bn1", p)
            keys[f"{pre}.conv2.weight"] = (p, p, 3, 3)
            if (s, b) in dcn:
                keys[f"{pre}.conv2.bias"] = (p,)
                keys[f"{pre}.conv2.conv_offset_mask.weight"] = (27, p, 3, 3)
                keys[f"{pre}.conv2.conv_offset_mask.bias"] = (27,)
            bn(f"{pre}.bn2", p)
            keys[f"{pre}.conv3.weight"] = (4 * p, p, 1, 1)
            bn(f"{pre}.bn3", 4 * p)
            if b == 0:
                keys[f"{pre}.downsample.0.weight"] = (4 * p, in_ch, 1, 1)
                bn(f"{pre}.downsample.1", 4 * p)
        in_ch = 4 * p
    for i in (0, 2, 4, 8):
        keys[f"proto_net.{i}.weight"], keys[f"proto_net.{i}.bias"] = (256, 256, 3, 3), (256,)
    keys["proto_net.10.weight"], keys["proto_net.10.bias"] = (32, 256, 1, 1), (32,)
    for i, c in enumerate((2048, 1024, 512)):
        keys[f"fpn.lat_layers.{i}.weight"], keys[f"fpn.lat_layers.{i}.bias"] = (256, c, 1, 1), (256,)
    for name, n in (("pred_layers", 3), ("downsample_layers", 2)):
        for i in range(n):
            keys[f"fpn.{name}.{i}.weight"], keys[f"fpn.{name}.{i}.bias"] = (256, 256, 3, 3), (256,)
    h = "prediction_layers.0."
    keys[h + "upfeature.0.weight"], keys[h + "upfeature.0.bias"] = (256, 256, 3, 3), (256,)
    for tower in ("conf", "bbox", "mask", "track"):
        for i in (0, 2):
            keys[f"{h}{tower}_extra.{i}.weight"], keys[f"{h}{tower}_extra.{i}.bias"] = (
                (256, 256, 3, 3),
                (256,),
            )
    for k, (kh, kw) in enumerate(KERNELS):
        for name, out in (
            ("bbox_layer", 4),
            ("centerness_layer", 1),
            ("track_layer", 128),
            ("mask_layer", 32),
        ):
            keys[f"{h}{name}.{k}.weight"], keys[f"{h}{name}.{k}.bias"] = (out, 256, kh, kw), (out,)
        if fcb == "none":
            keys[f"{h}conf_layer.{k}.weight"] = (num_classes, 256, kh, kw)
            keys[f"{h}conf_layer.{k}.bias"] = (num_classes,)
        else:
            keys[f"{h}conf_layer.{k}.conv_adaption.weight"] = (256, 256, kh, kw)
            keys[f"{h}conf_layer.{k}.conv.weight"] = (num_classes, 256, kh, kw)
            keys[f"{h}conf_layer.{k}.conv.bias"] = (num_classes,)
            if fcb == "ada":
                keys[f"{h}conf_layer.{k}.conv_offset.weight"] = (2 * kh * kw, 4, 1, 1)
    t = "TemporalNet."
    for name, shape in (
        ("conv1", (512, 633, 3, 3)),
        ("conv2", (512, 512, 3, 3)),
        ("conv3", (1024, 512, 3, 3)),
    ):
        keys[f"{t}{name}.weight"], keys[f"{t}{name}.bias"] = shape, (shape[0],)
    keys[t + "fc.weight"], keys[t + "fc.bias"] = (4, 1024), (4,)
    keys[t + "fc_coeff.weight"], keys[t + "fc_coeff.bias"] = (32, 1024), (32,)
    return keys
