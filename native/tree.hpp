// Forward kinematics and geometric Jacobians of one row, in float64: the compiled twin of
// ikdiffuser_ros/kinematics/chain.py (KinematicTree), same conventions:
//   node value theta = mult * q[var] + offset; node pose = parent pose * origin * motion(theta)
//   (revolute: rotation about `axis`, prismatic: translation along it), frames = node pose * offset,
//   Jacobian rows (vx, vy, vz, wx, wy, wz) of each frame's origin in the root frame.
#pragma once

#include <Eigen/Dense>

#include <cmath>
#include <vector>

namespace ikd {

using Mat3 = Eigen::Matrix3d;
using Vec3 = Eigen::Vector3d;
using MatXR = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct Pose {
  Mat3 R = Mat3::Identity();
  Vec3 p = Vec3::Zero();
};

inline Pose compose(const Pose& a, const Pose& b) { return {a.R * b.R, a.p + a.R * b.p}; }

// A kinematic tree of 1-DOF motion nodes (topological order) and the frames asked for.
struct Tree {
  int n_vars = 0;
  std::vector<int> parent, var;
  std::vector<char> prismatic;
  std::vector<double> mult, off;
  std::vector<Vec3> axis, p0, slide;  // slide = R0 * axis (prismatic translation direction)
  std::vector<Mat3> R0, A1, A2;       // local rotation R0 (I + sin K + (1 - cos) K^2) = R0 + s A1 + (1-c) A2
  std::vector<int> frame_parent;
  std::vector<Pose> frame_offset;
  std::vector<std::vector<int>> ancestors;  // per frame: the nodes that move it

  int n_nodes() const { return static_cast<int>(parent.size()); }
  int n_frames() const { return static_cast<int>(frame_parent.size()); }

  void add_node(int par, const Mat3& R, const Vec3& p, const Vec3& ax, bool prism, int v, double m, double o) {
    Mat3 K;
    K << 0, -ax.z(), ax.y(), ax.z(), 0, -ax.x(), -ax.y(), ax.x(), 0;
    parent.push_back(par);
    var.push_back(v);
    prismatic.push_back(prism);
    mult.push_back(m);
    off.push_back(o);
    axis.push_back(ax);
    p0.push_back(p);
    slide.push_back(R * ax);
    R0.push_back(R);
    A1.push_back(prism ? Mat3::Zero() : Mat3(R * K));
    A2.push_back(prism ? Mat3::Zero() : Mat3(R * K * K));
  }

  void add_frame(int par, const Pose& offset) {
    frame_parent.push_back(par);
    frame_offset.push_back(offset);
    std::vector<int> anc;
    for (int j = par; j >= 0; j = parent[j]) anc.push_back(j);
    ancestors.push_back(anc);
  }

  // Node poses (n_nodes) of joint vector q (n_vars) in the root frame.
  void node_poses(const double* q, std::vector<Pose>& out) const {
    out.resize(parent.size());
    for (int j = 0; j < n_nodes(); ++j) {
      const double th = mult[j] * q[var[j]] + off[j];
      Pose loc;
      if (prismatic[j]) {
        loc.R = R0[j];
        loc.p = p0[j] + th * slide[j];
      } else {
        loc.R = R0[j] + std::sin(th) * A1[j] + (1.0 - std::cos(th)) * A2[j];
        loc.p = p0[j];
      }
      out[j] = parent[j] < 0 ? loc : compose(out[parent[j]], loc);
    }
  }

  // Frame poses (n_frames) from node poses.
  void frame_poses(const std::vector<Pose>& nodes, std::vector<Pose>& out) const {
    out.resize(frame_parent.size());
    for (int f = 0; f < n_frames(); ++f)
      out[f] = frame_parent[f] < 0 ? frame_offset[f] : compose(nodes[frame_parent[f]], frame_offset[f]);
  }

  // Geometric Jacobian of frame f at position `at` (root frame) into J (6, n_vars), overwritten.
  template <class Derived>
  void jacobian(int f, const std::vector<Pose>& nodes, const Vec3& at, Eigen::MatrixBase<Derived>& J) const {
    J.setZero();
    for (int j : ancestors[f]) {
      const Vec3 a = nodes[j].R * axis[j];
      const int v = var[j];
      if (prismatic[j]) {
        J.template block<3, 1>(0, v) += mult[j] * a;
      } else {
        J.template block<3, 1>(0, v) += mult[j] * a.cross(at - nodes[j].p);
        J.template block<3, 1>(3, v) += mult[j] * a;
      }
    }
  }
};

// Rotation vector of R (axis * angle, angle in [0, pi]); the formula of transforms.so3_log.
inline Vec3 so3_log(const Mat3& R) {
  const Vec3 vee(0.5 * (R(2, 1) - R(1, 2)), 0.5 * (R(0, 2) - R(2, 0)), 0.5 * (R(1, 0) - R(0, 1)));
  const double c = std::min(1.0, std::max(-1.0, 0.5 * (R.trace() - 1.0)));
  const double s = vee.norm();
  const double angle = std::atan2(s, c);
  if (!(c < -0.99 && s < 1e-3)) return s < 1e-7 ? vee : Vec3(vee * (angle / s));
  // near pi: R ~ 2 a a^T - I; axis from the row of R + R^T of the largest a_i^2
  int k = 0;
  double best = -1.0;
  for (int i = 0; i < 3; ++i) {
    const double a2 = std::max(0.0, (R(i, i) - c) / std::max(1.0 - c, 1e-12));
    if (a2 > best) best = a2, k = i;
  }
  const Vec3 row = (R + R.transpose()).row(k).transpose();
  const Vec3 ax = row / std::max(row.norm(), 1e-12);
  const double sign = ax.dot(vee) < 0 ? -1.0 : 1.0;
  return ax * (sign * angle);
}

}  // namespace ikd
