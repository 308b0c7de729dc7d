// The IKMLPDenoiser's sampling loop for small CPU batches: the compiled twin of
// sampling/sampler.py + model/mlp_denoiser.py + model/feedback.py (DDIM eta = 0 and the low-noise
// tail, no guidance). The network runs in float32 like the torch path; the kinematic feedback's
// FK, Jacobian and least-squares step in float64.
#pragma once

#include <Eigen/Dense>

#include <vector>

#include "lm.hpp"
#include "tree.hpp"

namespace ikd {

using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using VecF = Eigen::VectorXf;

// Batches of at most this many rows are multiplied row by row (matrix-vector products): Eigen's matrix product packs
// the weights on every call, which for a few rows costs more than the arithmetic (the compiled sampler, panda, 4
// passes: 2 rows 670 -> 343 us, 4 rows 751 -> 571 us; 8 rows tie at ~1040 us; baxter 2 rows 794 -> 273 us).
constexpr Eigen::Index kRowByRowMax = 6;

struct Linear {
  MatF W;  // (out, in)
  VecF b;  // (out)
  void apply(const MatF& X, MatF& Y) const {
    if (X.rows() > kRowByRowMax) {
      Y.noalias() = X * W.transpose();
    } else {
      Y.resize(X.rows(), W.rows());
      for (Eigen::Index r = 0; r < X.rows(); ++r) Y.row(r).noalias() = X.row(r) * W.transpose();
    }
    Y.rowwise() += b.transpose();
  }
  // A factorized network's square hidden layer computed block by block: the blocks (out segment k, in segment j)
  // that hold a nonzero weight (a branch's own block and the trunk's, the trunk's row of blocks; without a trunk
  // the diagonal only). The dense product instead for one segment, or when the blocks hold more than
  // kMaxBlockShare of the weights: small products lose to one large one (32 rows, 19 passes: mobile_baxter's
  // trunk and two arms, 78 % of the weights in 7 blocks, 72 ms block by block against 63 ms dense; talos's trunk
  // and four limbs, 54 % in 13 blocks, 65 against 70 ms; baxter's two arms, 50 %, 37 against 38 ms).
  struct Part {
    int out, in;  // segment indices
    MatF Wt;      // the block, transposed and contiguous (in length, out length)
  };
  static constexpr double kMaxBlockShare = 2.0 / 3.0;
  std::vector<int> seg;     // unit boundaries of the segments (set by split_blocks)
  std::vector<Part> parts;  // the nonzero blocks, grouped by output segment in order
  void split_blocks(const std::vector<int>& segments) {
    if (segments.size() <= 2) return;
    const int S = static_cast<int>(segments.size()) - 1;
    std::vector<Part> nonzero;
    for (int k = 0; k < S; ++k)
      for (int j = 0; j < S; ++j) {
        const auto block = W.block(segments[k], segments[j], segments[k + 1] - segments[k], segments[j + 1] - segments[j]);
        if ((block.array() != 0.0f).any()) nonzero.push_back({k, j, block.transpose()});
      }
    double share = 0.0;
    for (const Part& p : nonzero) share += static_cast<double>(p.Wt.size()) / static_cast<double>(W.size());
    if (share > kMaxBlockShare) return;
    seg = segments;
    parts = std::move(nonzero);
  }
  void apply_blocks(const MatF& X, MatF& Y) const {
    if (parts.empty()) return apply(X, Y);
    Y.resize(X.rows(), W.rows());
    Y = b.transpose().replicate(X.rows(), 1);
    const Eigen::Index m = X.rows() > kRowByRowMax ? X.rows() : 1;  // rows per product
    for (const Part& p : parts)
      for (Eigen::Index r0 = 0; r0 < X.rows(); r0 += m)
        Y.block(r0, seg[p.out], m, seg[p.out + 1] - seg[p.out]).noalias() +=
            X.block(r0, seg[p.in], m, seg[p.in + 1] - seg[p.in]) * p.Wt;
  }
};

// Layer norm over each segment [seg[k], seg[k+1]) of the units (one segment: the whole row; a factorized
// network normalizes each chain's units on their own).
struct LayerNorm {
  VecF w, b;
  float eps = 1e-5f;
  std::vector<int> seg;  // unit boundaries, from 0 to the width (make_sampler: {0, d} for a dense network)
  void apply(const MatF& X, MatF& Y) const {
    Y.resize(X.rows(), X.cols());
    for (size_t k = 0; k + 1 < seg.size(); ++k) {
      const int a = seg[k], len = seg[k + 1] - seg[k];
      for (Eigen::Index r = 0; r < X.rows(); ++r) {
        const auto x = X.row(r).segment(a, len).array();
        const float mean = x.mean();
        const float inv = 1.0f / std::sqrt((x - mean).square().mean() + eps);
        Y.row(r).segment(a, len) =
            (((x - mean) * inv) * w.segment(a, len).transpose().array() + b.segment(a, len).transpose().array()).matrix();
      }
    }
  }
};

struct Block {
  LayerNorm ln;
  Linear fc1, fc2;
};

// One pass of the sampling plan: timestep t, the DDIM coefficients sqrt(abar_t), sqrt(1 - abar_t),
// sqrt(abar_prev), the direction's sqrt(1 - abar_prev - sigma^2) and the noise scale sigma (eta > 0);
// `tail` passes replace the sample by its clean estimate.
struct Pass {
  int t;
  float sa, s1ma, sa_prev, dir, sigma;
  bool tail;
};

// Normalizer and feedback constants of one model.
struct Norm {
  std::vector<double> lower, upper;      // (n) joint box
  std::vector<double> pos_mean, pos_std;  // (E*3)
};

class MLPSampler {
 public:
  MLPSampler(const Tree& tree, Norm norm, Linear inp, std::vector<Block> blocks, LayerNorm ln_out, Linear head,
             MatF t_table, bool feedback)
      : tree_(tree), norm_(std::move(norm)), inp_(std::move(inp)), blocks_(std::move(blocks)),
        ln_out_(std::move(ln_out)), head_(std::move(head)), t_table_(std::move(t_table)), feedback_(feedback) {
    n_ = tree.n_vars;
    E_ = tree.n_frames();
    d_ = static_cast<int>(head_.W.cols());
    Jtmp_.resize(6, n_);
  }

  int n() const { return n_; }
  int n_ee() const { return E_; }
  int feature_width() const { return 15 * E_ + n_; }
  int input_width() const { return static_cast<int>(inp_.W.cols()); }

  // x (M, n) initial noise, in place -> clean normalized samples; targets (M, E, 4, 4), masks (M, E);
  // noise: (passes, M, n) step noise of the passes with sigma > 0 (may be null when none has).
  // Returns the passes run (the deadline, monotonic s, stops the loop between passes; <= 0: none).
  int sample(MatF& x, const double* targets, const uint8_t* mask, const uint8_t* pos_only,
             const std::vector<Pass>& plan, const float* noise, double deadline) {
    const Eigen::Index M = x.rows();
    const int ctx_w = 11 * E_;
    MatF in(M, input_width());
    for (Eigen::Index r = 0; r < M; ++r)
      context(targets + 16 * E_ * r, mask + E_ * r, pos_only + E_ * r, in.row(r).data() + n_);
    MatF x0(M, n_);
    double last = 0.0;
    int done = 0;
    for (const Pass& p : plan) {
      const double t0 = monotonic_s();
      if (done > 0 && deadline > 0 && t0 + last > deadline) {
        x = x0;
        break;
      }
      in.leftCols(n_) = x;
      if (feedback_)
        for (Eigen::Index r = 0; r < M; ++r)
          features(x.row(r).data(), targets + 16 * E_ * r, mask + E_ * r, pos_only + E_ * r,
                   in.row(r).data() + n_ + ctx_w);
      forward(in, p.t, eps_);
      x0 = ((x - p.s1ma * eps_) / p.sa).cwiseMax(-1.0f).cwiseMin(1.0f);
      if (p.tail) {
        x = x0;
      } else {
        const MatF e = (x - p.sa * x0) / p.s1ma;
        x = p.sa_prev * x0 + p.dir * e;
        if (p.sigma > 0.0f && noise != nullptr)
          x += p.sigma * Eigen::Map<const MatF>(noise + static_cast<Eigen::Index>(done) * M * n_, M, n_);
      }
      ++done;
      last = monotonic_s() - t0;
    }
    return done;
  }

  // Network output eps_hat (M, n) for inputs (M, input_width) at timestep t.
  void forward(const MatF& in, int t, MatF& out) {
    inp_.apply(in, h_);
    for (size_t k = 0; k < blocks_.size(); ++k) {
      const Block& b = blocks_[k];
      b.ln.apply(h_, a_);
      a_.rowwise() += t_table_.row(t).segment(k * d_, d_);
      b.fc1.apply_blocks(a_, u_);
      u_ = u_.array() / (1.0f + (-u_.array()).exp());  // SiLU
      b.fc2.apply_blocks(u_, a_);
      h_ += a_;
    }
    ln_out_.apply(h_, a_);
    head_.apply(a_, out);
  }

  // Target features (11 E) of one row: [constrained, pos_only, standardized position, rot6d].
  void context(const double* T, const uint8_t* mask, const uint8_t* pos_only, float* out) const {
    for (int e = 0; e < E_; ++e) {
      const double* P = T + 16 * e;
      const bool m = mask[e], po = m && pos_only[e], rot = m && !po;
      float* o = out + 11 * e;
      o[0] = m ? 1.0f : 0.0f;
      o[1] = po ? 1.0f : 0.0f;
      for (int i = 0; i < 3; ++i)
        o[2 + i] = m ? static_cast<float>((P[4 * i + 3] - norm_.pos_mean[3 * e + i]) / norm_.pos_std[3 * e + i]) : 0.0f;
      for (int c = 0; c < 2; ++c)
        for (int i = 0; i < 3; ++i) o[5 + 3 * c + i] = rot ? static_cast<float>(P[4 * i + c]) : 0.0f;
    }
  }

  // Kinematic feedback (15 E + n) of one normalized sample x (n) toward its targets (module header).
  void features(const float* x, const double* T, const uint8_t* mask, const uint8_t* pos_only, float* out) {
    q_.resize(n_);
    for (int i = 0; i < n_; ++i) {
      const double xi = std::min(1.0, std::max(-1.0, static_cast<double>(x[i])));
      q_[i] = norm_.lower[i] + (xi + 1.0) * 0.5 * (norm_.upper[i] - norm_.lower[i]);
    }
    tree_.node_poses(q_.data(), nodes_);
    tree_.frame_poses(nodes_, frames_);
    Jw_.setZero(6 * E_, n_);
    err_.setZero(6 * E_);
    for (int e = 0; e < E_; ++e) {
      const Eigen::Map<const Eigen::Matrix<double, 4, 4, Eigen::RowMajor>> P(T + 16 * e);
      const Pose& F = frames_[e];
      const double pw = mask[e] ? 1.0 : 0.0, rw = (mask[e] && !pos_only[e]) ? 1.0 : 0.0;
      const Vec3 dpos = (P.block<3, 1>(0, 3) - F.p) * pw;
      const Vec3 drot = so3_log(P.block<3, 3>(0, 0) * F.R.transpose()) * rw;
      float* o = out + 15 * e;
      for (int i = 0; i < 3; ++i) {
        o[i] = static_cast<float>((F.p[i] - norm_.pos_mean[3 * e + i]) / norm_.pos_std[3 * e + i] * pw);
        o[3 + i] = static_cast<float>(F.R(i, 0) * pw);
        o[6 + i] = static_cast<float>(F.R(i, 1) * pw);
        o[9 + i] = static_cast<float>(dpos[i] / norm_.pos_std[3 * e + i]);
        o[12 + i] = static_cast<float>(drot[i]);
      }
      tree_.jacobian(e, nodes_, F.p, Jtmp_);
      Jw_.middleRows(6 * e, 3) = pw * Jtmp_.topRows(3);
      Jw_.middleRows(6 * e + 3, 3) = rw * Jtmp_.bottomRows(3);
      err_.segment<3>(6 * e) = dpos;
      err_.segment<3>(6 * e + 3) = drot;
    }
    Eigen::MatrixXd A = Jw_ * Jw_.transpose();
    A.diagonal().array() += 1e-2;
    const Eigen::VectorXd dq = Jw_.transpose() * A.llt().solve(err_);
    for (int i = 0; i < n_; ++i) {
      const double v = dq[i] * 2.0 / (norm_.upper[i] - norm_.lower[i]);
      out[15 * E_ + i] = static_cast<float>(std::min(2.0, std::max(-2.0, v)));
    }
  }

 private:
  const Tree& tree_;
  Norm norm_;
  Linear inp_;
  std::vector<Block> blocks_;
  LayerNorm ln_out_;
  Linear head_;
  MatF t_table_;  // (T, n_blocks * d): t_proj_k(SiLU(t_mlp(embedding(t)))) of every timestep and block
  bool feedback_;
  int n_ = 0, E_ = 0, d_ = 0;
  MatF h_, a_, u_, eps_;
  std::vector<double> q_;
  std::vector<Pose> nodes_, frames_;
  Eigen::MatrixXd Jw_;
  Eigen::Matrix<double, 6, Eigen::Dynamic> Jtmp_{6, 0};
  Eigen::VectorXd err_;
};

}  // namespace ikd
