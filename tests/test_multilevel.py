"""The multi-level model of Tewari et al. 2018: shapes, levels, corrective spaces, gradients,
checkpoints, compact codes and configuration errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facebench import conventions as cv
from facebench.baselines.tewari2018.loss import MultiLevelLoss, MultiLevelWeights
from facebench.baselines.tewari2018.model import (
    CorrectiveSpace,
    MultiLevelConfig,
    MultiLevelModel,
    MultiLevelParams,
    decode_reconstruction,
    encode_reconstruction,
)
from facebench.errors import FacebenchError, InputFileError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
K64 = cv.intrinsics(140.0, 64)
MEAN_T = np.array([0.0, 10.0, 600.0])


@pytest.fixture(scope="module")
def face_model():
    import facebench.models as fm

    return fm.load("synthetic")


@pytest.fixture(scope="module")
def net(face_model):
    torch.manual_seed(0)
    return MultiLevelModel(face_model, MultiLevelConfig(n_correctives=6), K=K64, mean_t=MEAN_T)


def test_shapes_of_every_output(net, face_model):
    B, V = 2, face_model.n_vertices
    with torch.no_grad():
        out = net.reconstruct(torch.rand(B, 3, 64, 64))
    p = out.params
    expected = {"identity": (B, 80), "expression": (B, 64), "reflectance": (B, 80), "q": (B, 4), "t": (B, 3),
                "sh_base": (B, 9, 3), "sh_final": (B, 9, 3), "delta_shape": (B, 6), "delta_reflectance": (B, 6)}
    assert {k: tuple(v.shape) for k, v in p.as_dict().items()} == expected
    for name in ("vertices_base", "vertices_final", "shape_offsets", "reflectance_base", "reflectance_final",
                 "reflectance_offsets"):
        assert tuple(getattr(out, name).shape) == (B, V, 3)
    assert torch.allclose(torch.linalg.vector_norm(p.q, dim=-1), torch.ones(B))
    assert tuple(net.landmarks_2d(out).shape) == (B, 68, 2)
    rendered = net.render(out, "base")
    assert tuple(rendered.image.shape) == (B, 64, 64, 3) and rendered.mask.any()
    with pytest.raises(ValueError, match="images must be"):
        net(torch.rand(1, 3, 32, 32))


def test_initial_state_is_the_frontal_mean_face_at_the_base_level(net, face_model):
    with torch.no_grad():
        out = net.reconstruct(torch.rand(3, 3, 64, 64))
    p = out.params
    assert torch.equal(out.vertices_final, out.vertices_base)
    assert torch.equal(out.reflectance_final, out.reflectance_base)
    assert not torch.all(p.delta_shape == 0)  # random δ, zero last layer: the branch is alive
    mean = torch.as_tensor(np.array(face_model.mean)).expand_as(out.vertices_base)
    assert torch.allclose(out.vertices_base, mean, atol=1e-4)
    assert torch.allclose(p.q, torch.tensor(cv.Q_FRONT, dtype=torch.float32).expand(3, 4))
    assert torch.allclose(p.t, torch.tensor(MEAN_T, dtype=torch.float32).expand(3, 3))
    from facebench.render import default_sh

    assert torch.allclose(p.sh_base, default_sh(3)) and torch.allclose(p.sh_final, default_sh(3))


def test_decode_matches_the_morphable_model(net, face_model):
    g = torch.Generator().manual_seed(1)
    p = MultiLevelParams(
        identity=torch.randn(2, 80, generator=g), expression=torch.randn(2, 64, generator=g),
        reflectance=torch.randn(2, 80, generator=g), q=torch.tensor([[0.0, 1, 0, 0]] * 2), t=torch.zeros(2, 3),
        sh_base=torch.zeros(2, 9, 3), sh_final=torch.zeros(2, 9, 3), delta_shape=torch.zeros(2, 6),
        delta_reflectance=torch.zeros(2, 6))
    out = net.decode(p)
    expected = face_model.shape(p.identity.double(), p.expression.double())
    assert torch.allclose(out.vertices_base.double(), expected, atol=1e-3)
    assert torch.allclose(out.reflectance_base.double(), face_model.reflectance(p.reflectance.double()), atol=1e-5)
    lm = net.landmarks_2d(out, "base")
    ref = cv.project(out.vertices_base[:, torch.as_tensor(np.array(face_model.landmark_indices)).long()], p.q, p.t,
                     torch.as_tensor(K64, dtype=torch.float32))
    assert torch.allclose(lm, ref)


def test_affine_corrective_is_exactly_M_delta_plus_b():
    space = CorrectiveSpace(3, 4, "affine")
    M = torch.arange(36, dtype=torch.float32).reshape(12, 3) / 7.0
    b = torch.linspace(-1, 1, 12)
    with torch.no_grad():
        space.layers[-1].weight.copy_(M)
        space.layers[-1].bias.copy_(b)
    delta = torch.tensor([[1.0, 0.0, 0.0], [0.5, -2.0, 3.0]])
    expected = (delta @ M.T + b).reshape(2, 4, 3)
    assert torch.allclose(space(delta), expected)
    # vertex 0's x offset is row 0 of M: M[0] . delta + b[0]
    assert space(delta)[1, 0, 0].item() == pytest.approx(float(M[0] @ delta[1] + b[0]), rel=1e-6)


@pytest.mark.parametrize("kind", ["relu1", "relu2"])
def test_relu_correctives_are_not_affine(kind):
    torch.manual_seed(0)
    affine, nonlinear = CorrectiveSpace(5, 10, "affine"), CorrectiveSpace(5, 10, kind, hidden=16)
    for space in (affine, nonlinear):
        assert torch.all(space(torch.randn(2, 5)) == 0)  # zero last layer at initialisation
        torch.nn.init.normal_(space.layers[-1].weight)
    d1, d2 = torch.randn(4, 5), torch.randn(4, 5)
    zero = torch.zeros(4, 5)

    def defect(space):  # 0 for an affine map
        return (space(d1 + d2) - space(d1) - space(d2) + space(zero)).abs().max().item()

    assert defect(affine) < 1e-4
    assert defect(nonlinear) > 1e-2


def test_no_correctives_means_final_equals_base(face_model):
    space = CorrectiveSpace(0, face_model.n_vertices)
    assert len(list(space.parameters())) == 0
    assert torch.all(space(torch.zeros(2, 0)) == 0) and space(torch.zeros(2, 0)).shape == (2, face_model.n_vertices, 3)
    net0 = MultiLevelModel(face_model, MultiLevelConfig(n_correctives=0), K=K64, mean_t=MEAN_T)
    assert net0.parameter_groups()["shape_corrective"] == [] or all(
        p.numel() == 0 for p in net0.parameter_groups()["shape_corrective"])


def test_gradient_reaches_every_parameter_group(net):
    torch.manual_seed(2)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        targets = net.landmarks_2d(net.reconstruct(images)) + 2.0
    loss = MultiLevelLoss(net, MultiLevelWeights.finetuning())
    net.zero_grad()
    total, _ = loss(net.reconstruct(images), images, targets)
    total.backward()
    groups = net.parameter_groups()
    assert set(groups) == {"base", "shape_corrective", "reflectance_corrective"}
    n_params = sum(1 for _ in net.parameters())
    assert sum(len(v) for v in groups.values()) == n_params  # every parameter in exactly one group
    for name, params in groups.items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params), name
    net.zero_grad()


def test_checkpoint_round_trip(net, face_model, tmp_path):
    with torch.no_grad():
        net.shape_corrective.layers[-1].weight.normal_()
    path = tmp_path / "ml.pt"
    torch.save(net.state_for_checkpoint(), path)
    again = MultiLevelModel.from_checkpoint(torch.load(path, weights_only=True), face_model)
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = net.reconstruct(images), again.reconstruct(images)
        net.shape_corrective.layers[-1].weight.zero_()
    assert torch.equal(a.vertices_final, b.vertices_final) and torch.equal(a.params.sh_final, b.params.sh_final)
    other = face_model.truncated(identity=79)
    with pytest.raises(FacebenchError, match="face model"):
        MultiLevelModel.from_checkpoint(torch.load(path, weights_only=True), other)
    with pytest.raises(FacebenchError, match="not a multi-level"):
        MultiLevelModel.from_checkpoint({"format": "other"}, face_model)


def test_encode_decode_round_trip_is_exact_and_compact(net, tmp_path):
    torch.manual_seed(3)
    n = 32
    with torch.no_grad():
        params = net(torch.rand(n, 3, 64, 64))
        net.shape_corrective.layers[-1].weight.normal_()
        net.reflectance_corrective.layers[-1].weight.normal_()
        ids = [f"img{i:03d}" for i in range(n)]
        path = encode_reconstruction(tmp_path / "codes.npz", params, ids, config=net.config, model_digest="abc")
        ids_back, back, metadata = decode_reconstruction(path)
        a, b = net.decode(params), net.decode(back)
        net.shape_corrective.layers[-1].weight.zero_()
        net.reflectance_corrective.layers[-1].weight.zero_()
    assert ids_back == ids and metadata["model_digest"] == "abc"
    assert MultiLevelConfig.from_dict(metadata["config"]) == net.config
    assert torch.equal(a.vertices_final, b.vertices_final)
    assert torch.equal(a.reflectance_final, b.reflectance_final)
    assert not torch.equal(a.vertices_final, a.vertices_base)


def test_code_size_per_reconstruction_is_under_5_kb(face_model, tmp_path):
    config = MultiLevelConfig()  # 80/64/80 modes, C = 500: 580 + 644 floats, pose, two SH sets
    n, g = 64, torch.Generator().manual_seed(4)
    sizes = {"identity": 80, "expression": 64, "reflectance": 80, "q": 4, "t": 3, "sh_base": 27, "sh_final": 27,
             "delta_shape": 500, "delta_reflectance": 500}
    fields = {k: torch.randn(n, v, generator=g) for k, v in sizes.items()}
    fields["sh_base"], fields["sh_final"] = fields["sh_base"].view(n, 9, 3), fields["sh_final"].view(n, 9, 3)
    params = MultiLevelParams(**fields)
    assert sum(sizes.values()) == 1285 and 80 + 500 == 580 and 80 + 64 + 500 == 644
    path = encode_reconstruction(tmp_path / "c.npz", params, range(n), config=config, model_digest=face_model.digest())
    assert path.stat().st_size / n < 5000
    _, back, _ = decode_reconstruction(path)
    assert all(torch.equal(getattr(back, k), getattr(params, k)) for k in sizes)


def test_decode_reconstruction_refuses_bad_files(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        decode_reconstruction(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputFileError, match="junk.npz: not a readable"):
        decode_reconstruction(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", ids=np.array(["a"]))
    with pytest.raises(InputFileError, match="missing arrays"):
        decode_reconstruction(tmp_path / "other.npz")


@pytest.mark.parametrize("changes, message", [
    ({"n_correctives": 20000}, "exceed the 14541 vertices"),
    ({"n_identity": 101}, "fewer than the 101"),
    ({"n_reflectance": 81}, "reflectance modes"),
    ({"corrective_kind": "tanh"}, "unknown corrective kind"),
    ({"n_expression": -1}, "n_expression must be >= 1"),
    ({"n_reflectance": 0}, "n_reflectance must be >= 1"),  # was a reshape ValueError (internal error)
    ({"n_correctives": -1}, "n_correctives must be >= 0"),
    ({"image_size": 16}, "image_size must be >= 32"),
    ({"encoder_width": 0}, "encoder_width must be >= 1"),
])
def test_config_errors(face_model, changes, message):
    config = MultiLevelConfig(**changes)
    with pytest.raises(FacebenchError, match=message):
        config.check(face_model)
    with pytest.raises(FacebenchError, match=message):
        MultiLevelModel(face_model, config, K=K64, mean_t=MEAN_T)


def test_config_dict_round_trip_and_errors():
    config = MultiLevelConfig(n_correctives=100, corrective_kind="relu2")
    assert MultiLevelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(FacebenchError, match="unknown multi-level config keys: colour"):
        MultiLevelConfig.from_dict({"colour": 1})
    with pytest.raises(FacebenchError, match="must be an integer"):
        MultiLevelConfig.from_dict({"n_identity": 2.5})


def test_bad_camera_arguments(face_model):
    with pytest.raises(FacebenchError, match="mean_t"):
        MultiLevelModel(face_model, MultiLevelConfig(n_correctives=0), K=K64, mean_t=[0, 0, -5])
    with pytest.raises(FacebenchError, match="K must be"):
        MultiLevelModel(face_model, MultiLevelConfig(n_correctives=0), K=np.eye(2), mean_t=MEAN_T)
