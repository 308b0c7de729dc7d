// Damped Levenberg-Marquardt IK of one row at a time, in float64: the compiled twin of
// sampling/lm.py's refine() (same step, active set, damping schedule, stopping rules), so the
// torch and compiled paths give the same answers.
#pragma once

#include <Eigen/Cholesky>
#include <Eigen/LU>

#include <chrono>
#include <cstdint>
#include <limits>

#include "tree.hpp"

namespace ikd {

inline double monotonic_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

struct LMConfig {
  int max_iters = 300;
  double pos_tol = 1e-5, rot_tol = 1e-4, rot_weight = 0.2;
  double lambda_init = 1e-3, lambda_up = 8.0, lambda_down = 0.25, lambda_min = 1e-9, lambda_max = 1e6;
  double max_step = 0.5, progress_ratio = 0.99;
  int patience = 15;
};

// Limits and wrapping of the variables (n each).
struct Box {
  const double* lower;
  const double* upper;
  const uint8_t* wrapping;
  double project(int i, double x) const {
    if (wrapping[i]) {
      const double two_pi = 2.0 * M_PI;
      double r = std::fmod(x + M_PI, two_pi);
      if (r < 0) r += two_pi;
      x = r - M_PI;
    }
    return std::min(std::max(x, lower[i]), upper[i]);
  }
};

// One row's goal: tip targets (E, 4, 4) row-major, masks (E), tip points (E, 3) or null, frozen (n).
struct RowGoal {
  const double* targets;
  const uint8_t* mask;
  const uint8_t* pos_only;
  const double* tips;
  const uint8_t* frozen;
};

struct RowResult {
  double pos_err = 0, rot_err = 0;
  bool converged = false;
  int iters = 0;
};

// Workspace of the LM for one tree (reused across rows, no allocation per iteration).
class LM {
 public:
  LM(const Tree& tree, const LMConfig& cfg) : t_(tree), c_(cfg) {
    const int n = tree.n_vars, m = 6 * tree.n_frames();
    J_.resize(m, n), Jn_.resize(m, n), Jf_.resize(m, n), Jtmp_.resize(6, n);
    e_.resize(m), en_.resize(m), w_.resize(m);
    H_.resize(n, n), A_.resize(n, n);
    g_.resize(n), dq_.resize(n), qn_.resize(n), free_.resize(n);
  }

  // Residual (6E) and Jacobian (6E, n) of the tip frames at q; the Jacobian only when J != null.
  void evaluate(const double* q, const RowGoal& goal, Eigen::VectorXd& e, MatXR* J) {
    t_.node_poses(q, nodes_);
    t_.frame_poses(nodes_, frames_);
    for (int f = 0; f < t_.n_frames(); ++f) {
      const Pose& P = frames_[f];
      const Eigen::Map<const Eigen::Matrix<double, 4, 4, Eigen::RowMajor>> T(goal.targets + 16 * f);
      Vec3 tip = P.p;
      Vec3 r = Vec3::Zero();
      if (goal.tips) {
        r = P.R * Eigen::Map<const Vec3>(goal.tips + 3 * f);
        tip += r;
      }
      e.segment<3>(6 * f) = T.block<3, 1>(0, 3) - tip;
      e.segment<3>(6 * f + 3) = so3_log(T.block<3, 3>(0, 0) * P.R.transpose());
      if (J) {
        t_.jacobian(f, nodes_, P.p, Jtmp_);
        if (goal.tips)
          for (int k = 0; k < t_.n_vars; ++k)
            Jtmp_.block<3, 1>(0, k) -= r.cross(Vec3(Jtmp_.block<3, 1>(3, k)));
        J->middleRows(6 * f, 6) = Jtmp_;
      }
    }
  }

  // Worst position / rotation error over the constrained frames of residual e.
  void errors(const Eigen::VectorXd& e, const RowGoal& goal, double& pos, double& rot) const {
    pos = rot = 0;
    for (int f = 0; f < t_.n_frames(); ++f) {
      if (!goal.mask[f]) continue;
      pos = std::max(pos, e.segment<3>(6 * f).norm());
      if (!goal.pos_only[f]) rot = std::max(rot, e.segment<3>(6 * f + 3).norm());
    }
  }

  // Refine q (n) in place toward the goal; stops at the deadline (monotonic s, <= 0: none).
  RowResult solve(double* q, const RowGoal& goal, const Box& box, double deadline) {
    const int n = t_.n_vars;
    for (int i = 0; i < n; ++i)
      if (!goal.frozen[i]) q[i] = box.project(i, q[i]);
    weights(goal);
    RowResult res;
    evaluate(q, goal, e_, &J_);
    errors(e_, goal, res.pos_err, res.rot_err);
    res.converged = res.pos_err <= c_.pos_tol && res.rot_err <= c_.rot_tol;
    double lam = c_.lambda_init;
    int no_progress = 0;
    while (!res.converged && res.iters < c_.max_iters) {
      if (deadline > 0 && monotonic_s() > deadline) break;
      const double cost_old = step(q, goal, box, lam);
      evaluate(qn_.data(), goal, en_, &Jn_);
      const double cost_new = en_.cwiseProduct(w_).squaredNorm();
      no_progress = cost_new < c_.progress_ratio * cost_old ? 0 : no_progress + 1;
      ++res.iters;
      if (cost_new < cost_old) {
        Eigen::Map<Eigen::VectorXd>(q, n) = qn_;
        lam = std::max(lam * c_.lambda_down, c_.lambda_min);
        J_.swap(Jn_);
        e_.swap(en_);
      } else {
        lam *= c_.lambda_up;
      }
      errors(e_, goal, res.pos_err, res.rot_err);
      res.converged = res.pos_err <= c_.pos_tol && res.rot_err <= c_.rot_tol;
      if (lam > c_.lambda_max || no_progress >= c_.patience) break;
    }
    return res;
  }

 private:
  void weights(const RowGoal& goal) {
    for (int f = 0; f < t_.n_frames(); ++f) {
      const double wp = goal.mask[f] ? 1.0 : 0.0;
      const double wr = (goal.mask[f] && !goal.pos_only[f]) ? c_.rot_weight : 0.0;
      w_.segment<3>(6 * f).setConstant(wp);
      w_.segment<3>(6 * f + 3).setConstant(wr);
    }
  }

  // Candidate qn_ of one damped step from q; returns the weighted squared error at q.
  double step(const double* q, const RowGoal& goal, const Box& box, double lam) {
    const int n = t_.n_vars;
    Jf_ = w_.asDiagonal() * J_;
    const Eigen::VectorXd ew = e_.cwiseProduct(w_);
    g_.noalias() = Jf_.transpose() * ew;
    for (int i = 0; i < n; ++i) {
      const bool at_low = q[i] <= box.lower[i] + 1e-12 && g_[i] < 0 && !box.wrapping[i];
      const bool at_up = q[i] >= box.upper[i] - 1e-12 && g_[i] > 0 && !box.wrapping[i];
      free_[i] = (at_low || at_up || goal.frozen[i]) ? 0.0 : 1.0;
    }
    Jf_ = Jf_ * free_.asDiagonal();
    H_.noalias() = Jf_.transpose() * Jf_;
    A_ = H_;
    A_.diagonal() += lam * (H_.diagonal() + Eigen::VectorXd::Ones(n));
    const Eigen::VectorXd rhs = g_.cwiseProduct(free_);
    llt_.compute(A_);
    dq_ = llt_.info() == Eigen::Success ? Eigen::VectorXd(llt_.solve(rhs)) : Eigen::VectorXd(A_.partialPivLu().solve(rhs));
    const double big = dq_.cwiseAbs().maxCoeff();
    const double scale = std::min(1.0, c_.max_step / std::max(big, 1e-300));
    for (int i = 0; i < n; ++i) qn_[i] = goal.frozen[i] ? q[i] : box.project(i, q[i] + dq_[i] * scale);
    return ew.squaredNorm();
  }

  const Tree& t_;
  LMConfig c_;
  std::vector<Pose> nodes_, frames_;
  MatXR J_, Jn_, Jf_;
  Eigen::Matrix<double, 6, Eigen::Dynamic> Jtmp_;
  Eigen::VectorXd e_, en_, w_, g_, dq_, qn_, free_;
  Eigen::MatrixXd H_, A_;
  Eigen::LLT<Eigen::MatrixXd> llt_;
};

}  // namespace ikd
