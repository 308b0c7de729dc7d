// Message <-> MoveIt conversions shared by the plugin (src/ikdiffuser_kinematics_plugin.cpp) and its
// test program (test/plugin_check.cpp): poses, and joint values in the two forms the node reads.
//
// A joint's values are MoveIt's variables of that joint (JointModel::getVariableNames order): one for
// revolute/prismatic joints; x, y, theta for a planar joint; trans_x..z, rot_x..w for a floating one.
// The node (ikdiffuser_ros/ros/conversions.py, JointStateLayout) reads them
//   - in moveit_msgs/RobotState (compute_ik): single-variable joints in joint_state by name, planar and
//     floating joints in multi_dof_joint_state as transforms (appendJoint / readJoint);
//   - in a sensor_msgs/JointState (get_ik_solutions' seed_state and solutions): every variable by name,
//     a multi-DOF joint's as <joint>/x, /y, /theta (planar) or /x, /y, /z, /yaw, /pitch, /roll
//     (floating, R = Rz(yaw) Ry(pitch) Rx(roll)) (appendNodeVariables / readNodeVariables).
// Both go through the joint's transform (JointModel::computeTransform / computeVariablePositions), so
// MoveIt's variables and the node's agree whatever their names.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <unordered_map>
#include <vector>

#include <Eigen/Geometry>
#include <geometry_msgs/msg/pose.hpp>
#include <geometry_msgs/msg/transform.hpp>
#include <moveit/robot_model/joint_model.hpp>
#include <moveit_msgs/msg/robot_state.hpp>
#include <sensor_msgs/msg/joint_state.hpp>

namespace ikdiffuser_kinematics_plugin
{
inline geometry_msgs::msg::Pose toPose(const Eigen::Isometry3d& t)
{
  const Eigen::Quaterniond q(t.rotation());
  geometry_msgs::msg::Pose p;
  p.position.x = t.translation().x();
  p.position.y = t.translation().y();
  p.position.z = t.translation().z();
  p.orientation.x = q.x();
  p.orientation.y = q.y();
  p.orientation.z = q.z();
  p.orientation.w = q.w();
  return p;
}

inline Eigen::Isometry3d toIsometry(const geometry_msgs::msg::Pose& p)
{
  Eigen::Isometry3d t = Eigen::Isometry3d::Identity();
  t.translation() << p.position.x, p.position.y, p.position.z;
  t.linear() = Eigen::Quaterniond(p.orientation.w, p.orientation.x, p.orientation.y, p.orientation.z)
                   .normalized()
                   .toRotationMatrix();
  return t;
}

inline geometry_msgs::msg::Transform toTransform(const Eigen::Isometry3d& t)
{
  const geometry_msgs::msg::Pose p = toPose(t);
  geometry_msgs::msg::Transform out;
  out.translation.x = p.position.x;
  out.translation.y = p.position.y;
  out.translation.z = p.position.z;
  out.rotation = p.orientation;
  return out;
}

inline Eigen::Isometry3d toIsometry(const geometry_msgs::msg::Transform& t)
{
  geometry_msgs::msg::Pose p;
  p.position.x = t.translation.x;
  p.position.y = t.translation.y;
  p.position.z = t.translation.z;
  p.orientation = t.rotation;
  return toIsometry(p);
}

// name -> index in `names`
inline std::unordered_map<std::string, size_t> indexOf(const std::vector<std::string>& names)
{
  std::unordered_map<std::string, size_t> index;
  for (size_t i = 0; i < names.size(); ++i)
    index[names[i]] = i;
  return index;
}

inline bool isMultiDof(const moveit::core::JointModel& joint)
{
  return joint.getType() == moveit::core::JointModel::PLANAR || joint.getType() == moveit::core::JointModel::FLOATING;
}

// A planar/floating joint's MoveIt variables at transform `t`, canonical: MoveIt's computeVariablePositions
// may give a planar theta in (-2 pi, 2 pi) and either sign of a quaternion; here theta is in [-pi, pi]
// (MoveIt's bounds) and rot_w >= 0.
inline void fromTransform(const moveit::core::JointModel& joint, const Eigen::Isometry3d& t, double* values)
{
  joint.computeVariablePositions(t, values);
  if (joint.getType() == moveit::core::JointModel::PLANAR)
    values[2] = std::remainder(values[2], 2.0 * M_PI);
  else if (joint.getType() == moveit::core::JointModel::FLOATING && values[6] < 0.0)
    for (int k = 3; k < 7; ++k)
      values[k] = -values[k];
}

// ------------------------------------------------------------------ moveit_msgs/RobotState (compute_ik)
// `joint` at `values` (its MoveIt variables) appended to `state`.
inline void appendJoint(const moveit::core::JointModel& joint, const double* values, moveit_msgs::msg::RobotState& state)
{
  if (isMultiDof(joint))
  {
    Eigen::Isometry3d t;
    joint.computeTransform(values, t);
    state.multi_dof_joint_state.joint_names.push_back(joint.getName());
    state.multi_dof_joint_state.transforms.push_back(toTransform(t));
  }
  else
  {
    state.joint_state.name.push_back(joint.getName());
    state.joint_state.position.push_back(values[0]);
  }
}

// Reads `joint`'s MoveIt variables out of `state` into `values`; false if the state does not have it.
// `index`/`multi_index`: indexOf(state.joint_state.name) / indexOf(state.multi_dof_joint_state.joint_names).
inline bool readJoint(const moveit::core::JointModel& joint, const moveit_msgs::msg::RobotState& state,
                      const std::unordered_map<std::string, size_t>& index,
                      const std::unordered_map<std::string, size_t>& multi_index, double* values)
{
  if (isMultiDof(joint))
  {
    const auto it = multi_index.find(joint.getName());
    if (it == multi_index.end() || it->second >= state.multi_dof_joint_state.transforms.size())
      return false;
    fromTransform(joint, toIsometry(state.multi_dof_joint_state.transforms[it->second]), values);
    return true;
  }
  const auto it = index.find(joint.getName());
  if (it == index.end() || it->second >= state.joint_state.position.size())
    return false;
  values[0] = state.joint_state.position[it->second];
  return true;
}

// ------------------------------------------------------------------ sensor_msgs/JointState (get_ik_solutions)
// The node's variable names of a multi-DOF joint, in chain order (kinematics/joint_names.py).
inline std::vector<std::string> nodeVariableNames(const moveit::core::JointModel& joint)
{
  const std::string& j = joint.getName();
  if (joint.getType() == moveit::core::JointModel::PLANAR)
    return { j + "/x", j + "/y", j + "/theta" };
  if (joint.getType() == moveit::core::JointModel::FLOATING)
    return { j + "/x", j + "/y", j + "/z", j + "/yaw", j + "/pitch", j + "/roll" };
  return { j };
}

// `joint` at `values` (its MoveIt variables) appended to `js` by the node's variable names.
inline void appendNodeVariables(const moveit::core::JointModel& joint, const double* values,
                                sensor_msgs::msg::JointState& js)
{
  const std::vector<std::string> names = nodeVariableNames(joint);
  js.name.insert(js.name.end(), names.begin(), names.end());
  if (!isMultiDof(joint))
  {
    js.position.push_back(values[0]);
    return;
  }
  Eigen::Isometry3d t;
  joint.computeTransform(values, t);
  const Eigen::Matrix3d r = t.linear();
  const double yaw = std::atan2(r(1, 0), r(0, 0));
  if (joint.getType() == moveit::core::JointModel::PLANAR)
  {
    js.position.insert(js.position.end(), { t.translation().x(), t.translation().y(), yaw });
    return;
  }
  const double pitch = std::asin(std::clamp(-r(2, 0), -1.0, 1.0));
  const double roll = std::atan2(r(2, 1), r(2, 2));
  js.position.insert(js.position.end(),
                     { t.translation().x(), t.translation().y(), t.translation().z(), yaw, pitch, roll });
}

// Reads `joint`'s MoveIt variables out of (names, positions) in the node's variable names; false if one is
// missing. `index`: indexOf(names).
inline bool readNodeVariables(const moveit::core::JointModel& joint, const std::unordered_map<std::string, size_t>& index,
                              const std::vector<double>& positions, double* values)
{
  const std::vector<std::string> names = nodeVariableNames(joint);
  std::vector<double> v;
  for (const std::string& name : names)
  {
    const auto it = index.find(name);
    if (it == index.end() || it->second >= positions.size())
      return false;
    v.push_back(positions[it->second]);
  }
  if (!isMultiDof(joint))
  {
    values[0] = v[0];
    return true;
  }
  Eigen::Isometry3d t = Eigen::Isometry3d::Identity();
  if (joint.getType() == moveit::core::JointModel::PLANAR)
  {
    t.translation() << v[0], v[1], 0.0;
    t.linear() = Eigen::AngleAxisd(v[2], Eigen::Vector3d::UnitZ()).toRotationMatrix();
  }
  else
  {
    t.translation() << v[0], v[1], v[2];
    t.linear() = (Eigen::AngleAxisd(v[3], Eigen::Vector3d::UnitZ()) * Eigen::AngleAxisd(v[4], Eigen::Vector3d::UnitY()) *
                  Eigen::AngleAxisd(v[5], Eigen::Vector3d::UnitX()))
                     .toRotationMatrix();
  }
  fromTransform(joint, t, values);
  return true;
}
}  // namespace ikdiffuser_kinematics_plugin
