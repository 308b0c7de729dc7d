// Python bindings of the compiled small-batch path (module ikdiffuser_ros._native); the Python
// side is ikdiffuser_ros/native.py. Every call releases the GIL while it computes.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>

#include "denoiser.hpp"
#include "lm.hpp"
#include "tree.hpp"

namespace py = pybind11;
using namespace ikd;

template <class T>
using Arr = py::array_t<T, py::array::c_style | py::array::forcecast>;

namespace {

void expect(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

void expect_shape(const py::array& a, std::vector<py::ssize_t> shape, const char* name) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || a.shape(i) == shape[i];
  expect(ok, std::string(name) + ": unexpected shape");
}

Pose pose_at(const double* P) {
  Pose out;
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) out.R(i, j) = P[4 * i + j];
    out.p[i] = P[4 * i + 3];
  }
  return out;
}

void write_pose(const Pose& P, double* out) {
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) out[4 * i + j] = P.R(i, j);
    out[4 * i + 3] = P.p[i];
  }
  out[12] = out[13] = out[14] = 0.0;
  out[15] = 1.0;
}

Tree make_tree(int n_vars, Arr<int64_t> parent, Arr<double> origin, Arr<double> axis, Arr<uint8_t> prismatic,
               Arr<int64_t> var, Arr<double> mult, Arr<double> offset, Arr<int64_t> frame_parent,
               Arr<double> frame_offset) {
  const py::ssize_t J = parent.size(), F = frame_parent.size();
  expect_shape(origin, {J, 4, 4}, "origin");
  expect_shape(axis, {J, 3}, "axis");
  expect_shape(frame_offset, {F, 4, 4}, "frame_offset");
  expect(prismatic.size() == J && var.size() == J && mult.size() == J && offset.size() == J, "node arrays differ in length");
  Tree t;
  t.n_vars = n_vars;
  for (py::ssize_t j = 0; j < J; ++j) {
    const int p = static_cast<int>(parent.at(j)), v = static_cast<int>(var.at(j));
    expect(p < j && p >= -1, "nodes must be in topological order");
    expect(v >= 0 && v < n_vars, "node variable out of range");
    const Pose o = pose_at(origin.data() + 16 * j);
    t.add_node(p, o.R, o.p, Vec3(axis.at(j, 0), axis.at(j, 1), axis.at(j, 2)), prismatic.at(j) != 0, v, mult.at(j),
               offset.at(j));
  }
  for (py::ssize_t f = 0; f < F; ++f) {
    const int p = static_cast<int>(frame_parent.at(f));
    expect(p >= -1 && p < J, "frame parent out of range");
    t.add_frame(p, pose_at(frame_offset.data() + 16 * f));
  }
  return t;
}

// FK (M, F, 4, 4) and, if J != null, Jacobians (M, F, 6, n) of q (M, n).
void fk_rows(const Tree& t, const double* q, py::ssize_t M, double* T, double* J) {
  std::vector<Pose> nodes, frames;
  const int F = t.n_frames(), n = t.n_vars;
  Eigen::Matrix<double, 6, Eigen::Dynamic> Jf(6, n);
  for (py::ssize_t r = 0; r < M; ++r) {
    t.node_poses(q + n * r, nodes);
    t.frame_poses(nodes, frames);
    for (int f = 0; f < F; ++f) {
      write_pose(frames[f], T + 16 * (F * r + f));
      if (!J) continue;
      t.jacobian(f, nodes, frames[f].p, Jf);
      Eigen::Map<Eigen::Matrix<double, 6, Eigen::Dynamic, Eigen::RowMajor>>(J + 6 * n * (F * r + f), 6, n) = Jf;
    }
  }
}

Arr<double> check_q(const Tree& t, Arr<double> q) {
  expect(q.ndim() == 2 && q.shape(1) == t.n_vars, "q must have shape (M, " + std::to_string(t.n_vars) + ")");
  return q;
}

py::array_t<double> fk(const Tree& t, Arr<double> q) {
  check_q(t, q);
  const py::ssize_t M = q.shape(0);
  py::array_t<double> T({M, static_cast<py::ssize_t>(t.n_frames()), py::ssize_t(4), py::ssize_t(4)});
  double* out = T.mutable_data();
  {
    py::gil_scoped_release nogil;
    fk_rows(t, q.data(), M, out, nullptr);
  }
  return T;
}

py::tuple fk_and_jacobian(const Tree& t, Arr<double> q) {
  check_q(t, q);
  const py::ssize_t M = q.shape(0), F = t.n_frames(), n = t.n_vars;
  py::array_t<double> T({M, F, py::ssize_t(4), py::ssize_t(4)});
  py::array_t<double> J({M, F, py::ssize_t(6), n});
  double *to = T.mutable_data(), *jo = J.mutable_data();
  {
    py::gil_scoped_release nogil;
    fk_rows(t, q.data(), M, to, jo);
  }
  return py::make_tuple(T, J);
}

LMConfig lm_config(const py::dict& d) {
  LMConfig c;
  auto get = [&](const char* k, auto& field) {
    if (d.contains(k)) field = d[k].cast<std::decay_t<decltype(field)>>();
  };
  get("max_iters", c.max_iters), get("pos_tol", c.pos_tol), get("rot_tol", c.rot_tol);
  get("rot_weight", c.rot_weight), get("lambda_init", c.lambda_init), get("lambda_up", c.lambda_up);
  get("lambda_down", c.lambda_down), get("lambda_min", c.lambda_min), get("lambda_max", c.lambda_max);
  get("max_step", c.max_step), get("progress_ratio", c.progress_ratio), get("patience", c.patience);
  return c;
}

// LM of every row (module lm.hpp); returns (q, pos_err, rot_err, converged, iterations).
py::tuple lm_solve(const Tree& t, Arr<double> q0, Arr<double> targets, Arr<uint8_t> mask, Arr<uint8_t> pos_only,
                   std::optional<Arr<double>> tips, Arr<uint8_t> frozen, Arr<double> lower, Arr<double> upper,
                   Arr<uint8_t> wrapping, const py::dict& config, double deadline) {
  check_q(t, q0);
  const py::ssize_t M = q0.shape(0), F = t.n_frames(), n = t.n_vars;
  expect_shape(targets, {M, F, 4, 4}, "targets");
  expect_shape(mask, {M, F}, "mask");
  expect_shape(pos_only, {M, F}, "pos_only");
  expect_shape(frozen, {M, n}, "frozen");
  if (tips) expect_shape(*tips, {M, F, 3}, "tip_points");
  expect(lower.size() == n && upper.size() == n && wrapping.size() == n, "limits must have n entries");
  py::array_t<double> q({M, n}), pe(M), re(M);
  py::array_t<bool> conv(M);
  py::array_t<int64_t> iters(M);
  std::copy(q0.data(), q0.data() + M * n, q.mutable_data());
  double *qo = q.mutable_data(), *peo = pe.mutable_data(), *reo = re.mutable_data();
  bool* co = conv.mutable_data();
  int64_t* io = iters.mutable_data();
  const double* tp = tips ? tips->data() : nullptr;
  const LMConfig cfg = lm_config(config);
  {
    py::gil_scoped_release nogil;
    LM lm(t, cfg);
    const Box box{lower.data(), upper.data(), wrapping.data()};
    for (py::ssize_t r = 0; r < M; ++r) {
      const RowGoal goal{targets.data() + 16 * F * r, mask.data() + F * r, pos_only.data() + F * r,
                         tp ? tp + 3 * F * r : nullptr, frozen.data() + n * r};
      const RowResult res = lm.solve(qo + n * r, goal, box, deadline);
      peo[r] = res.pos_err, reo[r] = res.rot_err, co[r] = res.converged, io[r] = res.iters;
    }
  }
  return py::make_tuple(q, pe, re, conv, iters);
}

MatF to_matf(const Arr<float>& a) {
  expect(a.ndim() == 1 || a.ndim() == 2, "weights must be 1-D or 2-D");
  const py::ssize_t rows = a.ndim() == 2 ? a.shape(0) : 1, cols = a.ndim() == 2 ? a.shape(1) : a.shape(0);
  return Eigen::Map<const MatF>(a.data(), rows, cols);
}

VecF to_vecf(const Arr<float>& a) { return Eigen::Map<const VecF>(a.data(), a.size()); }

std::vector<double> to_vec(const Arr<double>& a) { return std::vector<double>(a.data(), a.data() + a.size()); }

// weights: [inp_W, inp_b, (ln_w, ln_b, fc1_W, fc1_b, fc2_W, fc2_b) per block, ln_out_w, ln_out_b, head_W, head_b].
MLPSampler* make_sampler(const Tree& t, Arr<double> lower, Arr<double> upper, Arr<double> pos_mean, Arr<double> pos_std,
                         std::vector<Arr<float>> w, Arr<float> t_table, bool feedback, float ln_eps,
                         std::vector<int> ln_segments) {
  expect(w.size() >= 6 && (w.size() - 6) % 6 == 0, "weights: unexpected count");
  const size_t n_blocks = (w.size() - 6) / 6;
  const int d = static_cast<int>(w[1].size());  // the input layer's bias: the hidden width
  bool seg_ok = ln_segments.empty() || (ln_segments.size() >= 2 && ln_segments.front() == 0 && ln_segments.back() == d);
  for (size_t k = 1; seg_ok && k < ln_segments.size(); ++k) seg_ok = ln_segments[k] > ln_segments[k - 1];
  expect(seg_ok, "ln_segments: increasing unit boundaries from 0 to the hidden width");
  if (ln_segments.empty()) ln_segments = {0, d};  // a dense network: one segment
  std::vector<Block> blocks(n_blocks);
  for (size_t k = 0; k < n_blocks; ++k) {
    const size_t o = 2 + 6 * k;
    blocks[k].ln = {to_vecf(w[o]), to_vecf(w[o + 1]), ln_eps, ln_segments};
    blocks[k].fc1 = {to_matf(w[o + 2]), to_vecf(w[o + 3])};
    blocks[k].fc2 = {to_matf(w[o + 4]), to_vecf(w[o + 5])};
    expect(blocks[k].fc1.W.rows() == d && blocks[k].fc1.W.cols() == d && blocks[k].fc2.W.rows() == d &&
               blocks[k].fc2.W.cols() == d, "hidden layers: not d x d");
    blocks[k].fc1.split_blocks(ln_segments);
    blocks[k].fc2.split_blocks(ln_segments);
  }
  const size_t e = 2 + 6 * n_blocks;
  Linear inp{to_matf(w[0]), to_vecf(w[1])}, head{to_matf(w[e + 2]), to_vecf(w[e + 3])};
  LayerNorm ln_out{to_vecf(w[e]), to_vecf(w[e + 1]), ln_eps, ln_segments};
  const int E = t.n_frames(), n = t.n_vars;
  expect(lower.size() == n && upper.size() == n && pos_mean.size() == 3 * E && pos_std.size() == 3 * E,
         "normalizer sizes do not match the tree");
  expect(head.W.rows() == n, "head width != joints");
  const int width = n + 11 * E + (feedback ? 15 * E + n : 0);
  expect(inp.W.cols() == width, "input layer width does not match the robot");
  expect(t_table.ndim() == 2 && t_table.shape(1) == static_cast<py::ssize_t>(n_blocks * head.W.cols()), "t_table shape");
  Norm norm{to_vec(lower), to_vec(upper), to_vec(pos_mean), to_vec(pos_std)};
  return new MLPSampler(t, norm, inp, blocks, ln_out, head, to_matf(t_table), feedback);
}

py::tuple sample(MLPSampler& s, Arr<float> x, Arr<double> targets, Arr<uint8_t> mask, Arr<uint8_t> pos_only,
                 const std::vector<std::tuple<int, float, float, float, float, float, bool>>& plan, Arr<float> noise,
                 int num_t, double deadline) {
  const py::ssize_t M = x.ndim() == 2 ? x.shape(0) : -1, E = s.n_ee();
  expect(M >= 0 && x.shape(1) == s.n(), "x must have shape (M, n)");
  expect_shape(targets, {M, E, 4, 4}, "targets");
  expect_shape(mask, {M, E}, "mask");
  expect_shape(pos_only, {M, E}, "pos_only");
  std::vector<Pass> passes;
  bool noisy = false;
  for (const auto& [t, sa, s1ma, sap, dir, sigma, tail] : plan) {
    expect(t >= 0 && t < num_t, "timestep out of range");
    passes.push_back({t, sa, s1ma, sap, dir, sigma, tail});
    noisy = noisy || sigma > 0.0f;
  }
  if (noisy)
    expect_shape(noise, {static_cast<py::ssize_t>(passes.size()), M, static_cast<py::ssize_t>(s.n())}, "noise");
  MatF xm = Eigen::Map<const MatF>(x.data(), M, s.n());
  int done = 0;
  {
    py::gil_scoped_release nogil;
    done = s.sample(xm, targets.data(), mask.data(), pos_only.data(), passes, noisy ? noise.data() : nullptr,
                    deadline);
  }
  py::array_t<float> out({M, static_cast<py::ssize_t>(s.n())});
  std::copy(xm.data(), xm.data() + xm.size(), out.mutable_data());
  return py::make_tuple(out, done);
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "Compiled small-batch IK path: FK, Jacobians, Levenberg-Marquardt and the MLP sampler (float64 / float32)";
  py::class_<Tree>(m, "Tree")
      .def(py::init(&make_tree), py::arg("n_vars"), py::arg("parent"), py::arg("origin"), py::arg("axis"),
           py::arg("prismatic"), py::arg("var"), py::arg("mult"), py::arg("offset"), py::arg("frame_parent"),
           py::arg("frame_offset"))
      .def_readonly("n_vars", &Tree::n_vars)
      .def_property_readonly("n_frames", &Tree::n_frames)
      .def("fk", &fk, py::arg("q"))
      .def("fk_and_jacobian", &fk_and_jacobian, py::arg("q"));
  m.def("lm_solve", &lm_solve, py::arg("tree"), py::arg("q0"), py::arg("targets"), py::arg("mask"),
        py::arg("pos_only"), py::arg("tips"), py::arg("frozen"), py::arg("lower"), py::arg("upper"),
        py::arg("wrapping"), py::arg("config"), py::arg("deadline"));
  m.def("monotonic", &monotonic_s, "CLOCK_MONOTONIC seconds (time.monotonic()'s clock)");
  py::class_<MLPSampler>(m, "MLPSampler")
      .def(py::init(&make_sampler), py::keep_alive<1, 2>(), py::arg("tree"), py::arg("lower"), py::arg("upper"),
           py::arg("pos_mean"), py::arg("pos_std"), py::arg("weights"), py::arg("t_table"), py::arg("feedback"),
           py::arg("ln_eps"), py::arg("ln_segments") = std::vector<int>{})
      .def("sample", &sample, py::arg("x"), py::arg("targets"), py::arg("mask"), py::arg("pos_only"),
           py::arg("plan"), py::arg("noise"), py::arg("num_t"), py::arg("deadline"));
}
