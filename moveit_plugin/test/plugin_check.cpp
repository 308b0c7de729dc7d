// plugin_check: drives IKDiffuserKinematicsPlugin through MoveIt's own code paths against a running
// ikdiffuser_node, for test/moveit_plugin/test_plugin.py. Prints one JSON line.
//
// usage: plugin_check URDF SRDF GROUP CHECK TARGETS TIMEOUT [ARG] [--ros-args -p ...]
//   solve      held-out targets (FK of random states): the plugin (no callback: compute_ik) and a direct
//              compute_ik call with the same request, each verified by MoveIt's FK; latencies
//   reject     a validity callback that rejects the first ARG solutions; requests counted on ~/solutions
//   half       a validity callback that rejects half of all solutions (those whose joint values hash odd)
//   timeout    unreachable targets: how long the plugin takes past TIMEOUT
//   seed       the seed is a solution of the target: is it returned (compute_ik and get_ik_solutions)?
//   setfromik  RobotState::setFromIK with the group (validity callback: accept all)
//   consistency  consistency limits of ARG/100 around a seed within ARG/300 of the target's state, without a
//              callback (compute_ik) and with one (get_ik_solutions): solved, and every variable within its limit
//   in_callback  searchPositionIK inside a timer callback of the host node (its executor busy meanwhile)
//   down       no node: the error and how long it took
//   roundtrip  no node: every multi-DOF joint of the model at random values, through both wire forms
//              (include/ikdiffuser_kinematics_plugin/messages.hpp) and back: the same transform, canonical values
// Groups may have planar/floating joints (a mobile base): the solver's variables are MoveIt's, joint by joint;
// held-out states draw an unbounded base translation uniformly in [-1, 1] m (the node's base limits in
// config/robots/dual_ur5_mobile.yaml), as MoveIt would leave it at 0.
// The host node (parameters: --ros-args -p robot_description_kinematics.<group>.<name>:=...; the
// node called: its ikdiffuser_node, as the plugin's) is spun
// by a MultiThreadedExecutor thread, as move_group's is; the plugin never touches it.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <future>
#include <fstream>
#include <iostream>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <thread>

#include <ikdiffuser_kinematics_plugin/messages.hpp>
#include <moveit/kinematics_base/kinematics_base.hpp>
#include <moveit/robot_model/robot_model.hpp>
#include <moveit/robot_state/robot_state.hpp>
#include <moveit_msgs/srv/get_position_ik.hpp>
#include <pluginlib/class_loader.hpp>
#include <rclcpp/rclcpp.hpp>
#include <srdfdom/model.h>
#include <urdf/model.h>
#include <visualization_msgs/msg/marker_array.hpp>

using Clock = std::chrono::steady_clock;
using ErrorCodes = moveit_msgs::msg::MoveItErrorCodes;
using geometry_msgs::msg::Pose;
using ikdiffuser_kinematics_plugin::appendJoint;
using ikdiffuser_kinematics_plugin::toIsometry;
using ikdiffuser_kinematics_plugin::toPose;
using moveit::core::RobotState;

namespace
{
[[noreturn]] void die(const std::string& why)
{
  std::cerr << "plugin_check: " << why << std::endl;
  std::_Exit(2);  // threads (executors) may still run
}

std::string readFile(const std::string& path)
{
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

double msSince(Clock::time_point t0)
{
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double median(std::vector<double> v)
{
  if (v.empty())
    return 0.0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string json(const std::vector<double>& v)
{
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < v.size(); ++i)
    out << (i ? "," : "") << v[i];
  return out.str() + "]";
}

// Half of all solutions, the same half every time: those whose values (to 1e-9) hash odd (FNV-1a).
bool hashOdd(const std::vector<double>& values)
{
  uint64_t h = 1469598103934665603ull;
  for (const double v : values)
  {
    const auto bits = static_cast<uint64_t>(std::llround(v * 1e9));
    for (int byte = 0; byte < 8; ++byte)
      h = (h ^ ((bits >> (8 * byte)) & 0xff)) * 1099511628211ull;
  }
  return (h >> 32) & 1;  // a high bit: the low ones of an FNV product are weaker
}

struct Check
{
  moveit::core::RobotModelPtr model;
  moveit::core::JointModelGroup* jmg;
  std::vector<std::string> tips;
  std::string base;  // the solver's base frame (a link or the model frame); poses for the solver are in it
  kinematics::KinematicsBasePtr solver;
  rclcpp::Node::SharedPtr probe;  // the ~/solutions counter

  // The solver's variable vector (its joints' variables, getJointNames() order) set in / read out of `state`.
  void setSolverVariables(RobotState& state, const std::vector<double>& values) const
  {
    size_t offset = 0;
    for (const auto& name : solver->getJointNames())
    {
      const auto* joint = model->getJointModel(name);
      state.setJointPositions(joint, values.data() + offset);
      offset += joint->getVariableCount();
    }
  }
  std::vector<double> solverVariables(const RobotState& state) const
  {
    std::vector<double> values;
    for (const auto& name : solver->getJointNames())
    {
      const auto* joint = model->getJointModel(name);
      const double* v = state.getJointPositions(joint);
      values.insert(values.end(), v, v + joint->getVariableCount());
    }
    return values;
  }

  // The direct compute_ik request's robot_state: the seed, as the plugin sends it (no context state).
  moveit_msgs::msg::RobotState seedState(const std::vector<double>& seed) const
  {
    moveit_msgs::msg::RobotState msg;
    size_t offset = 0;
    for (const auto& name : solver->getJointNames())
    {
      const auto* joint = model->getJointModel(name);
      appendJoint(*joint, seed.data() + offset, msg);
      offset += joint->getVariableCount();
    }
    return msg;
  }

  // Worst position [m] and rotation [rad] error of the tips at `solution` (MoveIt's FK; the other joints at
  // `others`, default: the default state) against `targets`.
  std::pair<double, double> error(const std::vector<double>& solution, const std::vector<Pose>& targets,
                                  const RobotState* others = nullptr) const
  {
    RobotState state(model);
    state.setToDefaultValues();
    if (others)
      state = *others;
    setSolverVariables(state, solution);
    state.updateLinkTransforms();
    double pos = 0, rot = 0;
    for (size_t i = 0; i < tips.size(); ++i)
    {
      const Eigen::Isometry3d want = toIsometry(targets[i]);
      const Eigen::Isometry3d got = state.getFrameTransform(base).inverse() * state.getGlobalLinkTransform(tips[i]);
      pos = std::max(pos, (got.translation() - want.translation()).norm());
      rot = std::max(rot, Eigen::AngleAxisd(got.linear().transpose() * want.linear()).angle());
    }
    return { pos, rot };
  }

  // A random state (the same one for a given index) of the group's joints (`whole_robot`: of every joint, the
  // group's included) and the group's tips' poses in the base frame. Returns (the group's variables, the poses,
  // the state).
  std::tuple<std::vector<double>, std::vector<Pose>, RobotState> target(int index, bool whole_robot = false) const
  {
    random_numbers::RandomNumberGenerator rng(1000 + index);
    RobotState state(model);
    state.setToDefaultValues();
    for (const auto* joint : model->getActiveJointModels())
    {
      if (!whole_robot && !jmg->hasJointModel(joint->getName()))
        continue;
      std::vector<double> values(joint->getVariableCount());
      joint->getVariableRandomPositions(rng, values.data());
      for (size_t k = 0; k < values.size(); ++k)  // a mobile base's unbounded x, y
        if (ikdiffuser_kinematics_plugin::isMultiDof(*joint) && std::isinf(joint->getVariableBounds()[k].max_position_))
          values[k] = rng.uniformReal(-1.0, 1.0);
      state.setJointPositions(joint, values.data());
    }
    state.updateLinkTransforms();
    const Eigen::Isometry3d base_inverse = state.getFrameTransform(base).inverse();
    std::vector<Pose> poses;
    for (const auto& tip : tips)
      poses.push_back(toPose(base_inverse * state.getGlobalLinkTransform(tip)));
    return { solverVariables(state), poses, state };
  }

  std::vector<double> defaultGroupState() const
  {
    RobotState state(model);
    state.setToDefaultValues();
    std::vector<double> values;
    state.copyJointGroupPositions(jmg, values);
    return values;
  }

  std::vector<double> defaultSeed() const
  {
    RobotState state(model);
    state.setToDefaultValues();
    return solverVariables(state);
  }
};
}  // namespace

int main(int argc, char** argv)
{
  const auto args = rclcpp::init_and_remove_ros_arguments(argc, argv);
  if (args.size() < 7)
    die("usage: plugin_check URDF SRDF GROUP CHECK TARGETS TIMEOUT [ARG]");
  const std::string group = args[3], check = args[4];
  const int n = std::stoi(args[5]);
  const double timeout = std::stod(args[6]);
  const int arg = args.size() > 7 ? std::stoi(args[7]) : 0;

  // Declared before the model that holds the plugin instance: the library outlives it.
  pluginlib::ClassLoader<kinematics::KinematicsBase> loader("moveit_core", "kinematics::KinematicsBase");
  Check c;
  auto urdf = std::make_shared<urdf::Model>();
  auto srdf = std::make_shared<srdf::Model>();
  if (!urdf->initString(readFile(args[1])) || !srdf->initString(*urdf, readFile(args[2])))
    die("cannot parse " + args[1] + " / " + args[2]);
  c.model = std::make_shared<moveit::core::RobotModel>(urdf, srdf);
  c.jmg = c.model->getJointModelGroup(group);
  if (!c.jmg)
    die("no group " + group);

  auto host = std::make_shared<rclcpp::Node>(
      "plugin_check", rclcpp::NodeOptions().automatically_declare_parameters_from_overrides(true));
  std::string server = "/ikdiffuser_node";  // the plugin's default
  host->get_parameter("robot_description_kinematics." + group + ".ikdiffuser_node", server);
  c.probe = std::make_shared<rclcpp::Node>("plugin_check_probe");
  rclcpp::executors::MultiThreadedExecutor executor;
  executor.add_node(host);
  executor.add_node(c.probe);
  std::thread spinner([&executor] { executor.spin(); });
  // direct compute_ik calls, set up as the plugin's client: a node of their own, a single-threaded executor
  auto direct_node = std::make_shared<rclcpp::Node>("plugin_check_direct");
  rclcpp::executors::SingleThreadedExecutor direct_executor;
  direct_executor.add_node(direct_node);
  std::thread direct_spinner([&direct_executor] { direct_executor.spin(); });

  // As kinematics_plugin_loader (Iron and later): base frame, one tip (the group's last link), initialize,
  // the group's solver allocator.
  c.solver = loader.createSharedInstance("ikdiffuser_kinematics_plugin/IKDiffuserKinematicsPlugin");
  const auto* base_link = c.jmg->getLinkModels().front()->getParentJointModel()->getParentLinkModel();
  const std::string base = base_link ? base_link->getName() : c.model->getModelFrame();
  if (!c.solver->initialize(host, *c.model, group, base, { c.jmg->getLinkModels().back()->getName() }, 0.1))
    die("initialize failed for group " + group);
  c.tips = c.solver->getTipFrames();
  c.base = base;
  c.jmg->setSolverAllocators([&c](const moveit::core::JointModelGroup*) { return c.solver; });
  const std::vector<double> no_limits;
  std::ostringstream out;
  out << "{\"check\":\"" << check << "\"";

  auto direct = direct_node->create_client<moveit_msgs::srv::GetPositionIK>(server + "/compute_ik");
  std::atomic<int> answers{ 0 };
  auto counter = c.probe->create_subscription<visualization_msgs::msg::MarkerArray>(
      server + "/solutions", 10, [&answers](visualization_msgs::msg::MarkerArray::ConstSharedPtr) { ++answers; });
  if (check != "down" && check != "roundtrip")
  {
    if (!direct->wait_for_service(std::chrono::seconds(60)))
      die("no " + server + "/compute_ik");
    while (c.probe->count_publishers(server + "/solutions") == 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::vector<double> warm;
    ErrorCodes error;
    auto [q, poses, at] = c.target(-1);
    c.solver->searchPositionIK(poses, c.defaultSeed(), timeout, no_limits, warm, {}, error);  // discovery, caches
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }

  if (check == "solve")
  {
    int plugin_ok = 0, direct_ok = 0, verified = 0;
    double max_pos = 0, max_rot = 0;
    std::vector<double> plugin_ms, direct_ms;
    for (int i = 0; i < n; ++i)
    {
      auto [q, poses, at] = c.target(i);
      const auto seed = c.defaultSeed();
      // the plugin's own request, made directly
      auto req = std::make_shared<moveit_msgs::srv::GetPositionIK::Request>();
      req->ik_request.group_name = group;
      req->ik_request.ik_link_names = c.tips;
      for (const auto& p : poses)
      {
        geometry_msgs::msg::PoseStamped ps;
        ps.header.frame_id = c.solver->getBaseFrame();
        ps.pose = p;
        req->ik_request.pose_stamped_vector.push_back(ps);
      }
      req->ik_request.robot_state = c.seedState(seed);
      req->ik_request.timeout.sec = static_cast<int32_t>(timeout);
      req->ik_request.timeout.nanosec = static_cast<uint32_t>((timeout - std::floor(timeout)) * 1e9);
      auto call_direct = [&] {
        const auto t0 = Clock::now();
        const auto res = direct->async_send_request(req).future.get();
        direct_ms.push_back(msSince(t0));
        direct_ok += res->error_code.val == ErrorCodes::SUCCESS;
      };
      std::vector<double> solution;
      ErrorCodes error;
      bool ok = false;
      auto call_plugin = [&] {
        const auto t0 = Clock::now();
        ok = c.solver->searchPositionIK(poses, seed, timeout, no_limits, solution, {}, error);
        plugin_ms.push_back(msSince(t0));
      };
      if (i % 2)  // alternating which goes first
        call_direct(), call_plugin();
      else
        call_plugin(), call_direct();
      if (!ok)
        continue;
      ++plugin_ok;
      const auto [pos, rot] = c.error(solution, poses);
      max_pos = std::max(max_pos, pos);
      max_rot = std::max(max_rot, rot);
      verified += pos < 1e-4 && rot < 1e-3;
    }
    out << ",\"targets\":" << n << ",\"plugin_solved\":" << plugin_ok << ",\"direct_solved\":" << direct_ok
        << ",\"verified\":" << verified << ",\"max_position_error\":" << max_pos << ",\"max_rotation_error\":" << max_rot
        << ",\"plugin_ms\":" << json(plugin_ms) << ",\"direct_ms\":" << json(direct_ms);
  }
  else if (check == "reject" || check == "half")
  {
    int solved = 0, right_one = 0, verified = 0, calls = 0;
    std::vector<double> ms;
    const int before = answers;
    for (int i = 0; i < n; ++i)
    {
      auto [q, poses, at] = c.target(i);
      std::vector<std::vector<double>> seen;
      auto callback = [&](const Pose&, const std::vector<double>& candidate, ErrorCodes& error) {
        seen.push_back(candidate);
        const bool reject = check == "reject" ? static_cast<int>(seen.size()) <= arg : hashOdd(candidate);
        error.val = reject ? ErrorCodes::NO_IK_SOLUTION : ErrorCodes::SUCCESS;
      };
      std::vector<double> solution;
      ErrorCodes error;
      const auto t0 = Clock::now();
      const bool ok = c.solver->searchPositionIK(poses, c.defaultSeed(), timeout, no_limits, solution, callback, error);
      ms.push_back(msSince(t0));
      if (!ok)
        continue;
      ++solved;
      calls += static_cast<int>(seen.size());
      right_one += solution == seen.back() && (check == "half" || static_cast<int>(seen.size()) == arg + 1);
      const auto [pos, rot] = c.error(solution, poses);
      verified += pos < 1e-4 && rot < 1e-3;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the last ~/solutions messages
    out << ",\"targets\":" << n << ",\"solved\":" << solved << ",\"last_accepted\":" << right_one
        << ",\"verified\":" << verified << ",\"callback_calls\":" << calls << ",\"requests\":" << answers - before
        << ",\"ms\":" << json(ms);
  }
  else if (check == "timeout" || check == "down")
  {
    std::vector<double> ms;
    std::vector<int> codes;
    for (int i = 0; i < n; ++i)
    {
      auto [q, poses, at] = c.target(i);
      for (auto& p : poses)
        p.position.z += 10.0;  // out of reach
      std::vector<double> solution;
      ErrorCodes error;
      const auto t0 = Clock::now();
      const kinematics::KinematicsBase::IKCallbackFn accept = [](const Pose&, const std::vector<double>&,
                                                                 ErrorCodes& e) { e.val = ErrorCodes::SUCCESS; };
      // even targets through get_ik_solutions (with a callback), odd ones through compute_ik
      c.solver->searchPositionIK(poses, c.defaultSeed(), timeout, no_limits, solution, i % 2 ? nullptr : accept,
                                 error);
      ms.push_back(msSince(t0));
      codes.push_back(error.val);
    }
    out << ",\"timeout_ms\":" << timeout * 1000 << ",\"ms\":" << json(ms) << ",\"codes\":"
        << json(std::vector<double>(codes.begin(), codes.end()));
  }
  else if (check == "seed")
  {
    double compute_ik_dev = 0, solutions_dev = 0;
    size_t worst = 0;  // the solver variable that deviates most
    int solved = 0;
    for (int i = 0; i < n; ++i)
    {
      auto [q, poses, at] = c.target(i);
      std::vector<double> a, b;
      ErrorCodes error;
      const bool ok_a = c.solver->searchPositionIK(poses, q, timeout, no_limits, a, {}, error);
      const bool ok_b = c.solver->searchPositionIK(
          poses, q, timeout, no_limits, b,
          [](const Pose&, const std::vector<double>&, ErrorCodes& e) { e.val = ErrorCodes::SUCCESS; }, error);
      if (!ok_a || !ok_b)
        continue;
      ++solved;
      for (size_t j = 0; j < q.size(); ++j)
      {
        if (std::abs(a[j] - q[j]) > compute_ik_dev)
          compute_ik_dev = std::abs(a[j] - q[j]), worst = j;
        if (std::abs(b[j] - q[j]) > solutions_dev)
          solutions_dev = std::abs(b[j] - q[j]), worst = j;
      }
    }
    out << ",\"targets\":" << n << ",\"solved\":" << solved << ",\"compute_ik_max_dev\":" << compute_ik_dev
        << ",\"get_ik_solutions_max_dev\":" << solutions_dev << ",\"worst_variable\":" << worst;
  }
  else if (check == "consistency")
  {
    const double limit = arg / 100.0;
    int solved[2] = { 0, 0 }, within[2] = { 0, 0 }, verified = 0;
    double worst = 0;
    for (int i = 0; i < n; ++i)
    {
      auto [q, poses, at] = c.target(i);
      random_numbers::RandomNumberGenerator rng(5000 + i);
      std::vector<double> seed = q;
      for (double& v : seed)
        v += rng.uniformReal(-limit / 3, limit / 3);
      const std::vector<double> limits(q.size(), limit);
      for (int with_callback = 0; with_callback < 2; ++with_callback)
      {
        std::vector<double> solution;
        ErrorCodes error;
        const kinematics::KinematicsBase::IKCallbackFn accept = [](const Pose&, const std::vector<double>&,
                                                                   ErrorCodes& e) { e.val = ErrorCodes::SUCCESS; };
        if (!c.solver->searchPositionIK(poses, seed, timeout, limits, solution, with_callback ? accept : nullptr,
                                        error))
          continue;
        ++solved[with_callback];
        double dev = 0;
        for (size_t j = 0; j < seed.size(); ++j)
          dev = std::max(dev, std::abs(solution[j] - seed[j]));
        worst = std::max(worst, dev);
        within[with_callback] += dev <= limit + 1e-9;
        const auto [pos, rot] = c.error(solution, poses);
        verified += pos < 1e-4 && rot < 1e-3;
      }
    }
    out << ",\"targets\":" << n << ",\"limit\":" << limit << ",\"solved\":[" << solved[0] << "," << solved[1]
        << "],\"within\":[" << within[0] << "," << within[1] << "],\"verified\":" << verified
        << ",\"max_deviation\":" << worst;
  }
  else if (check == "roundtrip")
  {
    using namespace ikdiffuser_kinematics_plugin;
    double max_translation = 0, max_rotation = 0;
    bool canonical = true;
    int joints = 0;
    for (int i = 0; i < n; ++i)
    {
      auto [q, poses, at] = c.target(i, true);
      for (const auto* joint : c.model->getActiveJointModels())
      {
        if (!isMultiDof(*joint))
          continue;
        ++joints;
        const double* values = at.getJointPositions(joint);
        Eigen::Isometry3d want;
        joint->computeTransform(values, want);
        moveit_msgs::msg::RobotState msg;
        appendJoint(*joint, values, msg);
        sensor_msgs::msg::JointState js;
        appendNodeVariables(*joint, values, js);
        std::vector<double> a(joint->getVariableCount()), b(joint->getVariableCount());
        if (!readJoint(*joint, msg, indexOf(msg.joint_state.name), indexOf(msg.multi_dof_joint_state.joint_names),
                       a.data()) ||
            !readNodeVariables(*joint, indexOf(js.name), js.position, b.data()))
          die("roundtrip: " + joint->getName() + " not read back");
        for (const auto* read : { &a, &b })
        {
          Eigen::Isometry3d got;
          joint->computeTransform(read->data(), got);
          max_translation = std::max(max_translation, (got.translation() - want.translation()).norm());
          max_rotation = std::max(max_rotation, Eigen::AngleAxisd(got.linear().transpose() * want.linear()).angle());
          if (joint->getType() == moveit::core::JointModel::PLANAR)
            canonical &= std::abs((*read)[2]) <= M_PI;
          else
            canonical &= (*read)[6] >= 0.0;
        }
      }
    }
    out << ",\"targets\":" << n << ",\"joints\":" << joints << ",\"max_translation_error\":" << max_translation
        << ",\"max_rotation_error\":" << max_rotation << ",\"canonical\":" << (canonical ? "true" : "false");
  }
  else if (check == "in_callback")
  {
    // IK from inside a callback of the host node's executor, as move_group's /compute_ik does (where
    // srv_kinematics_plugin deadlocks: moveit/moveit2#3633)
    std::promise<int> done;
    rclcpp::TimerBase::SharedPtr timer;
    timer = host->create_wall_timer(std::chrono::milliseconds(10), [&] {
      timer->cancel();  // once
      int solved = 0;
      for (int i = 0; i < n; ++i)
      {
        auto [q, poses, at] = c.target(i);
        std::vector<double> solution;
        ErrorCodes error;
        solved += c.solver->searchPositionIK(poses, c.defaultSeed(), timeout, no_limits, solution, {}, error);
      }
      done.set_value(solved);
    });
    auto result = done.get_future();
    if (result.wait_for(std::chrono::seconds(60)) != std::future_status::ready)
      die("in_callback: no answer within 60 s (deadlock?)");
    out << ",\"targets\":" << n << ",\"solved\":" << result.get();
  }
  else if (check == "setfromik")
  {
    int solved = 0, verified = 0, callbacks = 0;
    bool kept = true;
    for (int i = 0; i < n; ++i)
    {
      // every joint random; the group's reset to their defaults: the others (a mobile base outside the group)
      // reach the node as the plugin's context state
      auto [q, poses, at] = c.target(i, true);
      RobotState state(at);
      state.setJointGroupPositions(c.jmg, c.defaultGroupState());
      state.updateLinkTransforms();
      EigenSTL::vector_Isometry3d goals;
      for (const auto& p : poses)
        goals.push_back(state.getFrameTransform(c.base) * toIsometry(p));
      auto valid = [&callbacks](RobotState*, const moveit::core::JointModelGroup*, const double*) {
        ++callbacks;
        return true;
      };
      if (!state.setFromIK(c.jmg, goals, c.tips, timeout, valid))  // goals in the model frame
        continue;
      ++solved;
      const auto [pos, rot] = c.error(c.solverVariables(state), poses, &state);
      verified += pos < 1e-4 && rot < 1e-3;
      // the joints outside the group kept
      for (const auto* joint : c.model->getActiveJointModels())
        if (!c.jmg->hasJointModel(joint->getName()))
          for (size_t k = 0; k < joint->getVariableCount(); ++k)
            kept &= state.getJointPositions(joint)[k] == at.getJointPositions(joint)[k];
    }
    out << ",\"targets\":" << n << ",\"solved\":" << solved << ",\"verified\":" << verified
        << ",\"callbacks\":" << callbacks << ",\"others_kept\":" << (kept ? "true" : "false");
  }
  else
    die("unknown check " + check);
  std::cout << out.str() << "}" << std::endl;
  executor.cancel();
  direct_executor.cancel();
  spinner.join();
  direct_spinner.join();
  c = Check();  // the plugin instances (and their threads) go before the context
  rclcpp::shutdown();
  return 0;
}
