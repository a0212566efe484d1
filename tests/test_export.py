"""Export and loading: round trips per format, file checks, TorchScript's absence, predict."""

import json
import shutil
import zipfile
from itertools import product
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import femsr.export as export_module  # noqa: E402
from femsr.export import LoadedModel, export_model, load_model, place, predict  # noqa: E402
from femsr.model import ModelConfig, build_model  # noqa: E402

CFG = ModelConfig(in_channels=5, width=6, n_blocks=2, up_width=3, patch_size=4)
SUFFIX = {"pt2": ".pt2", "torchscript": ".ts", "state": ".pt"}
# Outputs lie in [0, 1]. Two float32 runs of the network that take other kernels (another
# format, batch size, memory layout, CPU or thread count: blocked or Winograd convolutions sum
# in another order) differ by rounding: here about 3e-6 from float64, and some kernels round
# an order of magnitude worse. ATOL holds them all; a real fault moves outputs by 1e-2 or more.
ATOL = 1e-4
# With a zero tail the output is the density skip alone: no convolution, only upsampling and
# logit/sigmoid, whose vectorised float32 versions differ by a few ulp between CPUs.
SKIP_ATOL = 1e-5


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = build_model(CFG)
    with torch.no_grad():  # a nonzero tail, so the convolutions matter in the comparisons
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def exported(net, tmp_path_factory):
    """The network exported once to each format (export takes about a second)."""
    folder = tmp_path_factory.mktemp("exported")
    return {fmt: export_model(net, folder / f"net{suffix}") for fmt, suffix in SUFFIX.items()}


@pytest.fixture
def copies(exported, tmp_path):
    """Fresh copies of the exported files, for tests that damage them."""
    return {fmt: Path(shutil.copy(path, tmp_path)) for fmt, path in exported.items()}


def patches(n, seed=0):
    return np.random.default_rng(seed).random((n, 5, 4, 4), dtype=np.float32)


@pytest.mark.parametrize("fmt", ["pt2", "torchscript", "state"])
def test_round_trip_agrees_with_eager(tmp_path, net, exported, fmt):
    path = exported[fmt]
    loaded = load_model(path, device="cpu")
    assert isinstance(loaded, LoadedModel)
    assert (loaded.format, loaded.config, loaded.device) == (fmt, CFG, torch.device("cpu"))
    for n in (1, 7):  # the batch dimension is dynamic
        x = torch.from_numpy(patches(n, seed=n))
        with torch.no_grad():
            expected = net(x)
        torch.testing.assert_close(loaded(x), expected, rtol=0, atol=ATOL)
    # The format comes from the contents, not the name.
    renamed = tmp_path / "model.bin"
    shutil.copy(path, renamed)
    assert load_model(renamed, device="cpu").format == fmt
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("fmt", ["pt2", "torchscript", "state"])
def test_format_argument_overrides_suffix(tmp_path, net, fmt):
    path = export_model(net, tmp_path / "net.bin", format=fmt)
    assert load_model(path, device="cpu").format == fmt


def test_export_leaves_the_model_as_it_was(tmp_path):
    net = build_model(CFG).train()
    export_model(net, tmp_path / "net.pt2")
    export_model(net, tmp_path / "net.ts")
    assert net.training


def test_export_is_atomic(tmp_path, net, monkeypatch):
    path = export_model(net, tmp_path / "net.pt2")
    before = path.read_bytes()

    def fail(program, stream, **kwargs):
        stream.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch.export, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        export_model(net, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.pt2"]


def test_export_errors(tmp_path, net):
    with pytest.raises(TypeError, match=r"model must be built by femsr.model.build_model"):
        export_model(torch.nn.Conv2d(1, 1, 3), tmp_path / "x.pt2")
    with pytest.raises(ValueError, match=r"cannot tell the format from the suffix of 'x.onnx'"):
        export_model(net, tmp_path / "x.onnx")
    with pytest.raises(ValueError, match=r"format must be one of .*'onnx'"):
        export_model(net, tmp_path / "x.pt2", format="onnx")
    with pytest.raises(ValueError, match="max_batch must be an int >= 2, got 1"):
        export_model(net, tmp_path / "x.pt2", max_batch=1)


# ---------------------------------------------------------------------------------------------
# TorchScript where PyTorch no longer has it


def test_torchscript_missing_gives_a_clear_message(tmp_path, net, exported, monkeypatch):
    monkeypatch.delattr(torch.jit, "script")
    with pytest.raises(
        RuntimeError, match=r"TorchScript is not available in torch .* use the .pt2"
    ):
        export_model(net, tmp_path / "other.ts")
    with pytest.raises(RuntimeError, match="TorchScript is not available"):
        load_model(exported["torchscript"], device="cpu")
    # The other formats do not need it.
    assert load_model(exported["pt2"], device="cpu").format == "pt2"


def test_torchscript_compile_failure_gives_a_clear_message(tmp_path, net, monkeypatch):
    def broken(module):
        raise RuntimeError("not supported in Python 3.14+")

    monkeypatch.setattr(torch.jit, "script", broken)
    with pytest.raises(RuntimeError, match=r"TorchScript cannot compile the network .* .pt2"):
        export_model(net, tmp_path / "net.ts")
    assert not (tmp_path / "net.ts").exists()


# ---------------------------------------------------------------------------------------------
# Damaged and foreign files


@pytest.mark.parametrize("fmt", ["pt2", "torchscript", "state"])
def test_truncated_file(copies, fmt):
    path = copies[fmt]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="is not a model archive: truncated, corrupt"):
        load_model(path, device="cpu")


@pytest.mark.parametrize("fmt", ["pt2", "torchscript", "state"])
def test_corrupted_bytes(copies, fmt):
    path = copies[fmt]
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:  # flip a byte inside the largest member's data
        info = max(archive.infolist(), key=lambda i: i.compress_size)
    header = info.header_offset  # local header: 30 bytes, then name and extra of stated lengths
    name_length = int.from_bytes(data[header + 26 : header + 28], "little")
    extra_length = int.from_bytes(data[header + 28 : header + 30], "little")
    data[header + 30 + name_length + extra_length + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"is corrupt: member .* fails its CRC check"):
        load_model(path, device="cpu")


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model file .*absent.pt2' does not exist"):
        load_model(tmp_path / "absent.pt2")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(0).bytes(1000))
    with pytest.raises(ValueError, match="is not a model archive"):
        load_model(junk, device="cpu")
    other = tmp_path / "other.pt2"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("notes/readme.txt", "hello")
    with pytest.raises(ValueError, match=r"is a zip archive but not a femsr model \(.pt2, .ts"):
        load_model(other, device="cpu")


def write_state(path, payload):
    torch.save(payload, path)
    return path


def test_state_file_problems(tmp_path, net):
    state = {key: value.clone() for key, value in net.state_dict().items()}
    good = {"format": "femsr-state", "version": 1, "config": CFG.to_dict(), "state_dict": state}
    cases = [
        ({"weights": state}, "is a torch file but not a 'femsr-state' state dict"),
        ({**good, "version": 9}, "has state version 9, expected 1"),
        ({**good, "config": {**CFG.to_dict(), "depth": 2}}, r"invalid config: .*\['depth'\]"),
        ({**good, "config": {**CFG.to_dict(), "width": -1}}, "invalid config: width must be"),
        ({**good, "state_dict": None}, "holds no state_dict of tensors"),
        (
            {**good, "config": {**CFG.to_dict(), "width": 8}},
            r"weights that do not match its config: head.weight is \(6, 5, 3, 3\), "
            r"the config needs \(8, 5, 3, 3\)",
        ),
        (
            {**good, "config": {**CFG.to_dict(), "n_blocks": 3}},
            r"config: missing \['body.2.conv1.bias', .*; unexpected \['body.2.bias', 'body.2.w",
        ),
        (
            {**good, "config": {**CFG.to_dict(), "n_blocks": 1}},
            r"config: missing \['body.1.bias', 'body.1.weight'\]; unexpected \['body.1.conv1.bias'",
        ),
    ]
    for payload, match in cases:
        path = write_state(tmp_path / "bad.pt", payload)
        with pytest.raises(ValueError, match=match):
            load_model(path, device="cpu")


def test_pickled_code_is_refused(tmp_path):
    # weights_only=True: a file that would run code on unpickling is rejected, not executed.
    path = write_state(tmp_path / "evil.pt", {"format": "femsr-state", "hook": zipfile.ZipInfo})
    with pytest.raises(ValueError, match="cannot be unpickled with weights_only=True"):
        load_model(path, device="cpu")


def test_training_checkpoint_is_not_a_model(tmp_path):
    path = write_state(tmp_path / "checkpoint.pt", {"format": "femsr-checkpoint"})
    with pytest.raises(ValueError, match="not a 'femsr-state' state dict"):
        load_model(path, device="cpu")


def test_exported_program_without_or_with_a_wrong_config(tmp_path, net):
    example = (torch.rand(2, 5, 4, 4),)
    batch = {"x": {0: torch.export.Dim("batch", min=1, max=64)}}
    program = torch.export.export(net, example, dynamic_shapes=batch)
    bare = tmp_path / "bare.pt2"
    torch.export.save(program, bare)
    with pytest.raises(ValueError, match="holds no femsr config"):
        load_model(bare, device="cpu")
    garbled = tmp_path / "garbled.pt2"
    torch.export.save(program, garbled, extra_files={export_module._META: "{not json"})
    with pytest.raises(ValueError, match="has an invalid config"):
        load_model(garbled, device="cpu")
    # A config that does not describe the program: 7 input channels for a 5-channel program.
    wrong = json.dumps({"config": {**CFG.to_dict(), "in_channels": 7}})
    mismatched = tmp_path / "mismatched.pt2"
    torch.export.save(program, mismatched, extra_files={export_module._META: wrong})
    with pytest.raises(ValueError, match=r"does not run on a \(1, 7, 4, 4\) patch"):
        load_model(mismatched, device="cpu")


def test_scripted_module_without_config(tmp_path, net):
    bare = tmp_path / "bare.ts"
    torch.jit.save(torch.jit.script(net), str(bare))
    with pytest.raises(ValueError, match="holds no femsr config"):
        load_model(bare, device="cpu")


def test_wrong_output_shape_is_reported(tmp_path, net):
    # A config whose scale disagrees with the program: it runs, but the output is the wrong size.
    wrong = json.dumps({"config": {**CFG.to_dict(), "scale": 4, "upsampling": "2x2"}})
    path = tmp_path / "scale.ts"
    torch.jit.save(torch.jit.script(net), str(path), _extra_files={export_module._META: wrong})
    with pytest.raises(ValueError, match=r"returns shape \(1, 1, 40, 40\) for one patch"):
        load_model(path, device="cpu")


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message on a machine without CUDA"
)
def test_load_on_missing_cuda(exported):
    with pytest.raises(ValueError, match="asks for CUDA"):
        load_model(exported["state"], device="cuda")


# ---------------------------------------------------------------------------------------------
# predict


@pytest.mark.parametrize("fmt", ["eager", "pt2", "torchscript", "state"])
def test_predict_matches_the_network(net, exported, fmt):
    model = net if fmt == "eager" else load_model(exported[fmt])
    batch = patches(11)
    with torch.no_grad():
        expected = net(torch.from_numpy(batch)).numpy()
    for size in (1, 4, 64):  # batching does not change the result
        got = predict(model, batch, batch_size=size, device="cpu")
        assert got.shape == (11, 1, 40, 40) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("fmt", ["eager", "pt2", "torchscript"])
def test_predict_reduced_precision(net, exported, fmt):
    model = net if fmt == "eager" else load_model(exported[fmt])
    batch = patches(3)
    full = predict(model, batch)
    half = predict(model, batch, dtype="bfloat16")
    difference = np.abs(half - full).max()
    assert 0 < difference < 0.1  # autocast took effect, and stays close


def test_predict_leaves_an_eager_network_as_it_was(net):
    """The caller's network keeps its training mode (moving to another device, which a copy
    does, needs a GPU to test)."""
    net.train()
    try:
        with torch.no_grad():
            net.eval()
            expected = net(torch.from_numpy(patches(3))).numpy()
            net.train()
        got = predict(net, patches(3), device="cpu")
        assert net.training
        np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)  # but ran in eval mode
    finally:
        net.eval()


def test_place_copies_an_eager_network_to_another_device_and_moves_a_loaded_one(net, exported):
    # The meta device stands in for a GPU: a device the network is not on.
    copy = place(net, "meta")
    assert copy is not net and next(copy.parameters()).is_meta
    assert next(net.parameters()).device == torch.device("cpu")
    assert place(net, "cpu") is net
    loaded = load_model(exported["state"], device="cpu")
    assert place(loaded, "cpu") is loaded and loaded.device == torch.device("cpu")


def test_predict_accepts_integers_and_empty_batches(net):
    ones = np.ones((2, 5, 4, 4), dtype=np.int64)
    np.testing.assert_allclose(predict(net, ones), predict(net, ones.astype(np.float32)))
    assert predict(net, np.zeros((0, 5, 4, 4), np.float32)).shape == (0, 1, 40, 40)


def test_predict_errors(net):
    good = patches(2)
    with pytest.raises(TypeError, match="model must be an SRNet or a LoadedModel"):
        predict(torch.nn.Identity(), good)
    with pytest.raises(TypeError, match="batch must be a numpy array, got Tensor"):
        predict(net, torch.from_numpy(good))
    with pytest.raises(
        ValueError, match=r"batch must have shape \(N, \*\(5, 4, 4\)\), got \(2, 5, 4\)"
    ):
        predict(net, good[:, :, :, 0])
    with pytest.raises(ValueError, match=r"got \(2, 4, 4, 4\)"):
        predict(net, good[:, :4])
    with pytest.raises(TypeError, match="batch must hold real numbers, got dtype complex64"):
        predict(net, good.astype(np.complex64))
    bad = good.copy()
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="batch contains NaN or infinite values"):
        predict(net, bad)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        predict(net, good, batch_size=0)
    with pytest.raises(ValueError, match=r"dtype must be None or one of .*'float64'"):
        predict(net, good, dtype="float64")


def test_loaded_model_to_and_repr(exported):
    loaded = load_model(exported["pt2"], device="cpu")
    assert loaded.to("cpu") is loaded
    assert repr(loaded).startswith("LoadedModel(format='pt2', device=cpu, config=ModelConfig(")


# ---------------------------------------------------------------------------------------------
# predict with test-time dihedral averaging

# The eight symmetries of the square as the 2 x 2 signed permutations acting on (x, y), y up:
# an oracle for encoding.transform that shares none of its code.
MATRICES = [
    matrix
    for matrix in (np.reshape(entries, (2, 2)) for entries in product((-1, 0, 1), repeat=4))
    if np.array_equal(matrix.T @ matrix, np.eye(2))
]


def by_hand(channels, matrix):
    """Move every pixel of (N, C, S, S) to ``matrix @ (x, y)`` about the patch centre, and turn
    each (ux, uy) channel pair by ``matrix`` (the density, channel 0, is a scalar)."""
    size = channels.shape[-1]
    centre = (size - 1) / 2
    i, j = np.mgrid[0:size, 0:size]
    x, y = j - centre, centre - i
    source = matrix.T @ np.stack([x.ravel(), y.ravel()])  # matrix is orthogonal
    rows = np.rint(centre - source[1]).astype(int).reshape(size, size)
    cols = np.rint(source[0] + centre).astype(int).reshape(size, size)
    out = channels[..., rows, cols].copy()
    for c in range(1, channels.shape[1], 2):
        out[:, c], out[:, c + 1] = (
            matrix[0, 0] * out[:, c] + matrix[0, 1] * out[:, c + 1],
            matrix[1, 0] * out[:, c] + matrix[1, 1] * out[:, c + 1],
        )
    return out


def test_the_symmetries_are_the_eight_of_the_square_and_undo_each_other():
    from femsr.encoding import transform

    assert len(MATRICES) == 8
    x = patches(2, seed=3).astype(np.float64)
    turned = [transform(x, k, flip) for k, flip in export_module.SYMMETRIES]
    hand = [by_hand(x, matrix) for matrix in MATRICES]
    for image in turned:  # each is one of the hand-made eight, and no two are the same
        assert sum(np.array_equal(image, other) for other in hand) == 1
    for (k, flip), image in zip(export_module.SYMMETRIES, turned, strict=True):
        np.testing.assert_array_equal(transform(image, *export_module._inverse(k, flip)), x)


def test_tta_is_the_mean_of_the_eight_outputs_mapped_back(net):
    batch = patches(3, seed=4)
    with torch.no_grad():

        def run(x):
            return net(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()

        expected = np.mean([by_hand(run(by_hand(batch, m)), m.T) for m in MATRICES], axis=0)
    for size in (1, 2, 64):
        got = predict(net, batch, batch_size=size, tta=True)
        assert got.shape == (3, 1, 40, 40) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
    assert np.abs(predict(net, batch) - expected).max() > 1e-2  # the network is no symmetric one


@pytest.mark.parametrize("fmt", ["eager", "pt2"])
def test_tta_output_is_invariant_under_the_symmetries_of_its_input(net, exported, fmt):
    from femsr.encoding import transform

    model = net if fmt == "eager" else load_model(exported[fmt], device="cpu")
    batch = patches(2, seed=5)
    average = predict(model, batch, tta=True)
    plain = predict(model, batch)
    for k, flip in export_module.SYMMETRIES:
        undo = export_module._inverse(k, flip)
        seen = transform(predict(model, transform(batch, k, flip), tta=True), *undo)
        np.testing.assert_allclose(seen, average, rtol=0, atol=ATOL)
        if (k, flip) != (0, False):  # without averaging, the output depends on the turn
            seen_plain = transform(predict(model, transform(batch, k, flip)), *undo)
            assert np.abs(seen_plain - plain).max() > 1e-2


def test_tta_of_an_equivariant_network_is_its_output():
    """An untrained network returns the upsampled LR density (its tail starts at zero): a map
    that commutes with every symmetry, so averaging changes nothing."""
    equivariant = build_model(CFG)
    batch = patches(4, seed=6)
    np.testing.assert_allclose(
        predict(equivariant, batch, tta=True), predict(equivariant, batch), rtol=0, atol=SKIP_ATOL
    )


def test_tta_errors(net):
    with pytest.raises(TypeError, match="tta must be a bool, got str"):
        predict(net, patches(2), tta="yes")
    even = build_model(ModelConfig(in_channels=4, width=4, n_blocks=0, up_width=2, patch_size=4))
    batch = np.zeros((1, 4, 4, 4), np.float32)
    predict(even, batch)  # runs without averaging
    with pytest.raises(ValueError, match=r"tta needs the density plus .* the model takes 4"):
        predict(even, batch, tta=True)
