"""The regressor: the paper's initialization, the frozen 3DMM layer, VGG-16 weights, configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tetra_model_arrays

from facebench import conventions as cv
from facebench.baselines.encoders import VGG16Encoder, count_parameters, load_vgg16_features
from facebench.baselines.ramon2019.regressor import Linear3DMM, QuaternionNormalize, Regressor
from facebench.errors import FacebenchError, InputFileError
from facebench.models.morphable_model import MorphableModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tetra() -> MorphableModel:
    return MorphableModel(**tetra_model_arrays())


@pytest.mark.parametrize("encoder", ["small", "vgg16"])
def test_initial_prediction_is_mean_shape_frontal_pose_and_given_translation(tetra, encoder):
    torch.manual_seed(0)
    regressor = Regressor(tetra, encoder=encoder, image_size=32, init_translation=[5.0, -3.0, 640.0]).eval()
    out = regressor(torch.rand(3, 3, 32, 32))
    assert out["identity"].shape == (3, 2) and torch.all(out["identity"] == 0)
    np.testing.assert_allclose(out["q"].detach().numpy(), np.tile(cv.Q_FRONT, (3, 1)), atol=1e-7)
    np.testing.assert_allclose(out["t"].detach().numpy(), np.tile([5.0, -3.0, 640.0], (3, 1)), atol=1e-4)
    np.testing.assert_allclose(out["vertices"].detach().numpy(), np.tile(tetra.mean, (3, 1, 1)), atol=1e-6)
    assert regressor.config()["init_translation"] == [5.0, -3.0, 640.0]


def test_default_translation_is_the_distance_along_the_optical_axis(tetra):
    out = Regressor(tetra, image_size=32, init_distance_mm=550.0)(torch.rand(1, 3, 32, 32))
    np.testing.assert_allclose(out["t"].detach().numpy(), [[0.0, 0.0, 550.0]], atol=1e-4)


def test_shape_layer_equals_model_shape_and_is_frozen(tetra):
    layer = Linear3DMM(tetra, 2)
    alpha = torch.tensor([[1.5, -0.5], [0.0, 2.0]])
    np.testing.assert_allclose(layer(alpha).numpy(), tetra.shape(alpha.numpy()), atol=1e-6)
    # hand-computed: mode 0 moves vertex 1 along x by 2 mm per std, mode 1 vertex 2 along y by 1 mm
    np.testing.assert_allclose(layer(alpha)[0, 1].numpy(), [10.0 + 3.0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(layer(alpha)[1, 2].numpy(), [0, 10.0 + 2.0, 0], atol=1e-6)
    assert count_parameters(layer) == 0 and "basis" not in layer.state_dict()
    with pytest.raises(FacebenchError, match="n_identity"):
        Linear3DMM(tetra, 3)


def test_quaternion_layer_gives_unit_quaternions_and_gradients_reach_the_encoder(tetra):
    torch.manual_seed(1)
    regressor = Regressor(tetra, image_size=32)
    for head in (regressor.rotation_head, regressor.translation_head, regressor.identity_head):
        torch.nn.init.normal_(head[2].weight, std=0.1)
    out = regressor(torch.rand(4, 3, 32, 32))
    np.testing.assert_allclose(torch.linalg.vector_norm(out["q"], dim=-1).detach().numpy(), 1.0, atol=1e-6)
    (out["vertices"].sum() + out["q"][:, 0].sum() + out["t"].sum()).backward()
    assert regressor.encoder.features[0].weight.grad.abs().sum() > 0
    q = QuaternionNormalize()(torch.tensor([[0.0, 3.0, 0.0, 4.0]]))
    np.testing.assert_allclose(q.numpy(), [[0.0, 0.6, 0.0, 0.8]])


def test_vgg16_has_torchvision_layout_and_loads_a_local_state_dict(tmp_path):
    encoder = VGG16Encoder()
    keys = encoder.state_dict()
    convs = [k for k in keys if k.endswith(".weight")]
    assert len(convs) == 13 and sum(isinstance(m, torch.nn.MaxPool2d) for m in encoder.features) == 5
    assert tuple(keys["features.0.weight"].shape) == (64, 3, 3, 3)
    assert tuple(keys["features.28.weight"].shape) == (512, 512, 3, 3)
    torch.manual_seed(3)
    source = VGG16Encoder()
    state = {f"features.{k}": v for k, v in source.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 2)  # torchvision files carry the classifier too: ignored
    good = tmp_path / "vgg16.pth"
    torch.save(state, good)
    load_vgg16_features(encoder, good)
    assert torch.equal(encoder.features[28].weight, source.features[28].weight)

    bad = dict(state)
    bad["features.0.weight"] = torch.zeros(64, 1, 3, 3)
    torch.save(bad, tmp_path / "shape.pth")
    with pytest.raises(InputFileError, match=r"features\.0\.weight has shape"):
        load_vgg16_features(encoder, tmp_path / "shape.pth")
    renamed = {k.replace("features.", "backbone."): v for k, v in state.items()}
    torch.save(renamed, tmp_path / "keys.pth")
    with pytest.raises(InputFileError, match="missing features.0.bias"):
        load_vgg16_features(encoder, tmp_path / "keys.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(InputFileError, match="weights_only"):
        load_vgg16_features(encoder, tmp_path / "junk.pth")


def test_config_round_trip_and_model_mismatch(tetra):
    torch.manual_seed(2)
    regressor = Regressor(tetra, image_size=(32, 48), n_identity=1, init_translation=[1.0, 2.0, 600.0])
    torch.nn.init.normal_(regressor.identity_head[2].weight)
    rebuilt = Regressor.from_config(regressor.config(), tetra)
    rebuilt.load_state_dict(regressor.state_dict())
    images = torch.rand(2, 3, 32, 48)
    for key, value in regressor.eval()(images).items():
        assert torch.equal(value, rebuilt.eval()(images)[key]), key
    other = MorphableModel(**{**tetra_model_arrays(), "mean": tetra.mean + 1.0})
    with pytest.raises(FacebenchError, match="face model"):
        Regressor.from_config(regressor.config(), other)
    with pytest.raises(FacebenchError, match="encoder"):
        Regressor.from_config({**regressor.config(), "encoder": "resnet"}, tetra)
    with pytest.raises(ValueError, match="images must be"):
        regressor(torch.rand(1, 3, 32, 32))
    with pytest.raises(FacebenchError, match="unknown encoder"):
        Regressor(tetra, encoder="resnet")
