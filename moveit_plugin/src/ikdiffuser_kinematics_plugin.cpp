// ikdiffuser_kinematics_plugin/IKDiffuserKinematicsPlugin: a MoveIt kinematics::KinematicsBase whose
// solver is a running ikdiffuser_node (docs/moveit.md).
//
// One request per IK query, for the plugin's group (group_name: only its joints move, the others stay at the
// caller's state): ~/get_ik_solutions for N solutions when MoveIt gives a solution callback (they are walked
// in order until one passes it) or asks for all solutions, else ~/compute_ik (one answer). Consistency
// limits go with either, as joint constraints around the seed. The client
// lives on the plugin's own node, spun by its own executor thread: the host's node is never spun or
// blocked (the cause of moveit/moveit2#3633). getPositionFK is local (moveit_core's RobotState).
//
// Groups of single-variable joints and of planar/floating joints (a mobile base): the solver's variable
// vector (seed, solutions) is MoveIt's, joint by joint in getJointNames() order (a planar joint's x, y,
// theta; a floating joint's trans_x..z, rot_x..w); on the wire they are what the node reads
// (include/ikdiffuser_kinematics_plugin/messages.hpp): multi_dof_joint_state transforms in compute_ik's
// robot_state and answer, <joint>/x, /y, /theta ... variables in get_ik_solutions' seed and solutions.
//
// Parameters, under robot_description_kinematics.<group> (kinematics.yaml):
//   ikdiffuser_node   the node's full name, whose services are called (default /ikdiffuser_node)
//   num_solutions     solutions asked for when a callback is given (default 16)
//   avoid_collisions  let the node reject colliding solutions against its own scene (default false:
//                     MoveIt's callback checks collisions)
//   kinematics_solver_ik_links  the group's tips (default: the tips MoveIt gives; since Iron MoveIt gives
//                     one, the group's last link, so multi-tip groups list theirs here, as on Humble)
#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <ikdiffuser_kinematics_plugin/messages.hpp>
#include <ikdiffuser_ros/srv/get_ik_solutions.hpp>
#include <moveit/kinematics_base/kinematics_base.hpp>
#include <moveit/robot_model/robot_model.hpp>
#include <moveit/robot_state/robot_state.hpp>
#include <moveit_msgs/srv/get_position_ik.hpp>
#include <pluginlib/class_list_macros.hpp>
#include <rclcpp/rclcpp.hpp>

namespace ikdiffuser_kinematics_plugin
{
using Clock = std::chrono::steady_clock;
using ErrorCodes = moveit_msgs::msg::MoveItErrorCodes;
using GetIKSolutions = ikdiffuser_ros::srv::GetIKSolutions;
using GetPositionIK = moveit_msgs::srv::GetPositionIK;
using geometry_msgs::msg::Pose;
using moveit::core::JointModel;
using Solutions = std::vector<std::vector<double>>;

namespace
{
const rclcpp::Logger LOGGER = rclcpp::get_logger("ikdiffuser_kinematics_plugin");
// The node answers within the budget it is given + a few ms; past the caller's deadline the plugin
// waits this much longer at most, then gives up with TIMED_OUT.
constexpr auto GRACE = std::chrono::milliseconds(15);
// History depth of the service clients' reply readers (service_io.CLIENT_REPLY_DEPTH on the Python side).
constexpr std::size_t CLIENT_REPLY_DEPTH = 1000;

Clock::duration seconds(double s)
{
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

builtin_interfaces::msg::Duration toDuration(Clock::duration d)
{
  const auto ns = std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::nanoseconds>(d).count());
  builtin_interfaces::msg::Duration out;
  out.sec = static_cast<int32_t>(ns / 1000000000);
  out.nanosec = static_cast<uint32_t>(ns % 1000000000);
  return out;
}

template <typename T>
T parameter(rclcpp::Node& node, const std::string& name, const T& fallback)
{
  if (!node.has_parameter(name))
    node.declare_parameter<T>(name, fallback);
  return node.get_parameter(name).get_value<T>();
}
}  // namespace

class IKDiffuserKinematicsPlugin : public kinematics::KinematicsBase
{
public:
  ~IKDiffuserKinematicsPlugin() override
  {
    stop_ = true;
    if (spinner_.joinable())
    {
      executor_->cancel();
      spinner_.join();
    }
  }

  bool initialize(const rclcpp::Node::SharedPtr& node, const moveit::core::RobotModel& robot_model,
                  const std::string& group_name, const std::string& base_frame,
                  const std::vector<std::string>& tip_frames, double search_discretization) override
  {
    const std::string prefix = "robot_description_kinematics." + group_name + ".";
    const auto server = parameter<std::string>(*node, prefix + "ikdiffuser_node", "/ikdiffuser_node");
    num_solutions_ = parameter<int64_t>(*node, prefix + "num_solutions", 16);
    avoid_collisions_ = parameter<bool>(*node, prefix + "avoid_collisions", false);
    const auto ik_links = parameter<std::vector<std::string>>(*node, prefix + "kinematics_solver_ik_links", {});
    storeValues(robot_model, group_name, base_frame, ik_links.empty() ? tip_frames : ik_links, search_discretization);

    const moveit::core::JointModelGroup* jmg = robot_model.getJointModelGroup(group_name);
    std::string why = !jmg ? "no such group" : tip_frames_.empty() ? "no tips" : "";
    std::string tips;
    for (const std::string& link : tip_frames_)
      tips += (tips.empty() ? "" : ", ") + link;
    for (const std::string& link : tip_frames_)
      if (!robot_model.hasLinkModel(link))
        why = "no tip link '" + link + "'";
    if (!why.empty() || !supportsGroup(jmg, &why))
    {
      RCLCPP_ERROR(LOGGER, "group '%s': %s", group_name.c_str(), why.c_str());
      return false;
    }
    jmg_ = jmg;
    for (const JointModel* joint : jmg->getActiveJointModels())
    {
      joints_.push_back(joint);
      joint_names_.push_back(joint->getName());
      offsets_.push_back(variable_count_);
      variable_count_ += joint->getVariableCount();
    }
    link_names_ = jmg->getLinkModelNames();

    // The plugin's own node and executor thread, in the host's context.
    const auto context = node->get_node_base_interface()->get_context();
    std::string name = "ikdiffuser_kinematics_" + group_name;
    for (char& c : name)
      c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
    client_node_ = std::make_shared<rclcpp::Node>(name, node->get_namespace(),
                                                  rclcpp::NodeOptions()
                                                      .context(context)
                                                      .use_global_arguments(false)
                                                      .start_parameter_services(false)
                                                      .start_parameter_event_publisher(false));
    // Every client of a service reads the one reply topic and drops other clients' responses only when it
    // takes them: the default depth of 10 loses answers when the node answers many clients at once
    // (ikdiffuser_ros/ros/service_io.py, docs/ros_node.md).
    const auto reply_qos = rclcpp::ServicesQoS().keep_last(CLIENT_REPLY_DEPTH);
    solutions_client_ = client_node_->create_client<GetIKSolutions>(server + "/get_ik_solutions", reply_qos);
    compute_ik_client_ = client_node_->create_client<GetPositionIK>(server + "/compute_ik", reply_qos);
    rclcpp::ExecutorOptions options;
    options.context = context;
    executor_ = std::make_shared<rclcpp::executors::SingleThreadedExecutor>(options);
    executor_->add_node(client_node_);
    spinner_ = std::thread([this, context] {
      while (!stop_ && context->is_valid())
        executor_->spin_once(std::chrono::milliseconds(100));
    });
    RCLCPP_INFO(LOGGER, "group '%s' (%zu joints, %zu variables, tips %s): IK from %s (%ld solutions per callback query)",
                group_name.c_str(), joint_names_.size(), variable_count_, tips.c_str(), server.c_str(),
                static_cast<long>(num_solutions_));
    return true;
  }

  bool supportsGroup(const moveit::core::JointModelGroup* jmg, std::string* error_text_out) const override
  {
    std::string why = jmg->getActiveJointModels().empty() ? "the group has no active joints" : "";
    for (const JointModel* joint : jmg->getActiveJointModels())
      if (joint->getVariableCount() != 1 && !isMultiDof(*joint))
        why = "joint '" + joint->getName() + "' has several variables and is neither planar nor floating";
    if (error_text_out)
      *error_text_out = why;
    return why.empty();
  }

  bool getPositionIK(const Pose& ik_pose, const std::vector<double>& ik_seed_state, std::vector<double>& solution,
                     ErrorCodes& error_code, const kinematics::KinematicsQueryOptions& /*options*/) const override
  {
    return search({ ik_pose }, ik_seed_state, default_timeout_, {}, solution, {}, error_code, nullptr);
  }

  // All the solutions of one get_ik_solutions request.
  bool getPositionIK(const std::vector<Pose>& ik_poses, const std::vector<double>& ik_seed_state,
                     Solutions& solutions, kinematics::KinematicsResult& result,
                     const kinematics::KinematicsQueryOptions& /*options*/) const override
  {
    const ErrorCodes error = request(ik_poses, ik_seed_state, Clock::now() + seconds(default_timeout_), {}, true,
                                     nullptr, solutions);
    result.kinematic_error = error.val == ErrorCodes::SUCCESS ? kinematics::KinematicErrors::OK :
                                                                kinematics::KinematicErrors::NO_SOLUTION;
    result.solution_percentage = error.val == ErrorCodes::SUCCESS ? 1.0 : 0.0;
    return error.val == ErrorCodes::SUCCESS;
  }

  bool searchPositionIK(const Pose& ik_pose, const std::vector<double>& ik_seed_state, double timeout,
                        std::vector<double>& solution, ErrorCodes& error_code,
                        const kinematics::KinematicsQueryOptions& /*options*/) const override
  {
    return search({ ik_pose }, ik_seed_state, timeout, {}, solution, {}, error_code, nullptr);
  }

  bool searchPositionIK(const Pose& ik_pose, const std::vector<double>& ik_seed_state, double timeout,
                        const std::vector<double>& consistency_limits, std::vector<double>& solution,
                        ErrorCodes& error_code, const kinematics::KinematicsQueryOptions& /*options*/) const override
  {
    return search({ ik_pose }, ik_seed_state, timeout, consistency_limits, solution, {}, error_code, nullptr);
  }

  bool searchPositionIK(const Pose& ik_pose, const std::vector<double>& ik_seed_state, double timeout,
                        std::vector<double>& solution, const IKCallbackFn& solution_callback, ErrorCodes& error_code,
                        const kinematics::KinematicsQueryOptions& /*options*/) const override
  {
    return search({ ik_pose }, ik_seed_state, timeout, {}, solution, solution_callback, error_code, nullptr);
  }

  bool searchPositionIK(const Pose& ik_pose, const std::vector<double>& ik_seed_state, double timeout,
                        const std::vector<double>& consistency_limits, std::vector<double>& solution,
                        const IKCallbackFn& solution_callback, ErrorCodes& error_code,
                        const kinematics::KinematicsQueryOptions& /*options*/) const override
  {
    return search({ ik_pose }, ik_seed_state, timeout, consistency_limits, solution, solution_callback, error_code,
                  nullptr);
  }

  bool searchPositionIK(const std::vector<Pose>& ik_poses, const std::vector<double>& ik_seed_state, double timeout,
                        const std::vector<double>& consistency_limits, std::vector<double>& solution,
                        const IKCallbackFn& solution_callback, ErrorCodes& error_code,
                        const kinematics::KinematicsQueryOptions& /*options*/,
                        const moveit::core::RobotState* context_state) const override
  {
    return search(ik_poses, ik_seed_state, timeout, consistency_limits, solution, solution_callback, error_code,
                  context_state);
  }

  bool getPositionFK(const std::vector<std::string>& link_names, const std::vector<double>& joint_angles,
                     std::vector<Pose>& poses) const override
  {
    if (joint_angles.size() != variable_count_)
      return false;
    moveit::core::RobotState state(robot_model_);
    state.setToDefaultValues();
    for (size_t i = 0; i < joints_.size(); ++i)
      state.setJointPositions(joints_[i], joint_angles.data() + offsets_[i]);
    state.updateLinkTransforms();
    const Eigen::Isometry3d base_inverse = state.getFrameTransform(base_frame_).inverse();  // a link or the model frame
    poses.clear();
    for (const std::string& link : link_names)
    {
      if (!robot_model_->hasLinkModel(link))
      {
        RCLCPP_ERROR(LOGGER, "getPositionFK: no link '%s'", link.c_str());
        return false;
      }
      poses.push_back(toPose(base_inverse * state.getGlobalLinkTransform(link)));
    }
    return true;
  }

  const std::vector<std::string>& getJointNames() const override
  {
    return joint_names_;
  }

  const std::vector<std::string>& getLinkNames() const override
  {
    return link_names_;
  }

private:
  // One request; with a callback, its solutions in order until one passes.
  bool search(const std::vector<Pose>& poses, const std::vector<double>& seed, double timeout,
              const std::vector<double>& consistency_limits, std::vector<double>& solution,
              const IKCallbackFn& callback, ErrorCodes& error_code, const moveit::core::RobotState* context) const
  {
    const auto deadline = Clock::now() + seconds(timeout > 0 ? timeout : default_timeout_);
    Solutions solutions;
    error_code = request(poses, seed, deadline, consistency_limits, bool(callback), context, solutions);
    if (error_code.val != ErrorCodes::SUCCESS)
      return false;
    if (!callback)
    {
      solution = solutions.front();
      return true;
    }
    for (const auto& candidate : solutions)
    {
      callback(poses.front(), candidate, error_code);
      if (error_code.val == ErrorCodes::SUCCESS)
      {
        solution = candidate;
        return true;
      }
    }
    return false;  // error_code: the callback's verdict on the last solution
  }

  // get_ik_solutions (many: a callback, or all solutions wanted) or compute_ik, for the group
  ErrorCodes request(const std::vector<Pose>& poses, const std::vector<double>& seed, Clock::time_point deadline,
                     const std::vector<double>& consistency_limits, bool many, const moveit::core::RobotState* context,
                     Solutions& solutions) const
  {
    ErrorCodes error;
    error.val = ErrorCodes::INVALID_ROBOT_STATE;
    if (seed.size() != variable_count_ ||
        (!consistency_limits.empty() && consistency_limits.size() != variable_count_))
    {
      RCLCPP_ERROR(LOGGER, "group '%s': %zu seed values and %zu consistency limits for %zu variables",
                   group_name_.c_str(), seed.size(), consistency_limits.size(), variable_count_);
      return error;
    }
    if (poses.size() != tip_frames_.size())
    {
      RCLCPP_ERROR(LOGGER, "group '%s': %zu poses for %zu tips", group_name_.c_str(), poses.size(),
                   tip_frames_.size());
      error.val = ErrorCodes::INVALID_LINK_NAME;
      return error;
    }
    std::vector<geometry_msgs::msg::PoseStamped> stamped(poses.size());
    for (size_t i = 0; i < poses.size(); ++i)
    {
      stamped[i].header.frame_id = base_frame_;
      stamped[i].pose = poses[i];
    }
    solutions.clear();
    std::vector<double> values;
    if (many)
    {
      auto req = std::make_shared<GetIKSolutions::Request>();
      req->group_name = group_name_;
      req->targets.resize(1);
      req->targets[0].link_names = tip_frames_;
      req->targets[0].poses = stamped;
      req->num_solutions = static_cast<uint32_t>(num_solutions_);
      eachSeedJoint(seed, context, [&req](const JointModel& joint, const double* values) {
        appendNodeVariables(joint, values, req->seed_state);
      });
      req->avoid_collisions = avoid_collisions_;
      req->report_collisions = false;  // MoveIt's callback judges each solution; the flags would cost solve time
      req->flat_solutions = true;      // one array, no JointState per solution to build, send and read
      req->random_seed = -1;
      if (!consistency_limits.empty())
        req->joint_constraints = consistencyConstraints<ikdiffuser_ros::msg::JointConstraint>(seed, consistency_limits);
      const auto res = call(*solutions_client_, req, req->timeout, deadline, error);
      if (!res)
        return error;
      if (res->results.empty())  // the request refused as a whole
      {
        RCLCPP_ERROR(LOGGER, "get_ik_solutions: %s", res->message.c_str());
        error.val = res->error_code;
        return error;
      }
      const auto& result = res->results.front();
      const size_t width = result.joint_names.size();  // the active variables, by the node's names
      const auto index = indexOf(result.joint_names);
      for (size_t k = 0; width > 0 && (k + 1) * width <= result.positions.size(); ++k)
        if (readSolution(index, std::vector<double>(result.positions.begin() + k * width,
                                                    result.positions.begin() + (k + 1) * width), values))
          solutions.push_back(values);
      error.val = solutions.empty() && result.error_code != ErrorCodes::SUCCESS ? result.error_code :
                                                                                  ErrorCodes::SUCCESS;
    }
    else
    {
      auto req = std::make_shared<GetPositionIK::Request>();
      auto& ik = req->ik_request;
      ik.group_name = group_name_;
      eachSeedJoint(seed, context, [&ik](const JointModel& joint, const double* values) {
        appendJoint(joint, values, ik.robot_state);
      });
      ik.avoid_collisions = avoid_collisions_;
      ik.pose_stamped_vector = stamped;
      ik.ik_link_names = tip_frames_;
      if (!consistency_limits.empty())
        ik.constraints.joint_constraints = consistencyConstraints<moveit_msgs::msg::JointConstraint>(seed, consistency_limits);
      const auto res = call(*compute_ik_client_, req, ik.timeout, deadline, error);
      if (!res)
        return error;
      error = res->error_code;
      if (error.val == ErrorCodes::SUCCESS && readSolution(res->solution, values))
        solutions.push_back(values);
    }
    if (error.val == ErrorCodes::SUCCESS && solutions.empty())
    {
      RCLCPP_ERROR(LOGGER, "group '%s': the node's answer lacks some of the group's joints", group_name_.c_str());
      error.val = ErrorCodes::FAILURE;
    }
    return error;
  }

  // Send one request with the time left as its budget; wait until the deadline (+ GRACE) at most.
  template <typename Service>
  typename Service::Response::SharedPtr call(rclcpp::Client<Service>& client,
                                             const typename Service::Request::SharedPtr& req,
                                             builtin_interfaces::msg::Duration& budget, Clock::time_point deadline,
                                             ErrorCodes& error) const
  {
    const auto left = [deadline] { return std::max(Clock::duration::zero(), deadline - Clock::now()); };
    if (!client.service_is_ready() && !client.wait_for_service(left()))
    {
      RCLCPP_ERROR(LOGGER, "%s is not available: is ikdiffuser_node running? (group '%s', parameter ikdiffuser_node)",
                   client.get_service_name(), group_name_.c_str());
      error.val = ErrorCodes::COMMUNICATION_FAILURE;
      return nullptr;
    }
    budget = toDuration(left());
    auto pending = client.async_send_request(req);
    if (pending.future.wait_until(deadline + GRACE) != std::future_status::ready)
    {
      client.remove_pending_request(pending.request_id);
      RCLCPP_WARN(LOGGER, "%s: no answer within the timeout", client.get_service_name());
      error.val = ErrorCodes::TIMED_OUT;
      return nullptr;
    }
    return pending.future.get();
  }

  // sink(joint, its values) for the joints a request's seed state names: every active joint of the model
  // outside the group at the caller's full state when MoveIt gives one, then the group's at the seed.
  template <typename Sink>
  void eachSeedJoint(const std::vector<double>& seed, const moveit::core::RobotState* context, Sink sink) const
  {
    if (context)
      for (const JointModel* joint : robot_model_->getActiveJointModels())
        if (!jmg_->hasJointModel(joint->getName()))
          sink(*joint, context->getJointPositions(joint));
    for (size_t i = 0; i < joints_.size(); ++i)
      sink(*joints_[i], seed.data() + offsets_[i]);
  }

  // The group's variables out of compute_ik's answer (multi-DOF joints from multi_dof_joint_state).
  bool readSolution(const moveit_msgs::msg::RobotState& state, std::vector<double>& values) const
  {
    values.assign(variable_count_, 0.0);
    const auto index = indexOf(state.joint_state.name);
    const auto multi_index = indexOf(state.multi_dof_joint_state.joint_names);
    for (size_t i = 0; i < joints_.size(); ++i)
      if (!readJoint(*joints_[i], state, index, multi_index, values.data() + offsets_[i]))
        return false;
    return true;
  }

  // The group's variables out of one row of get_ik_solutions' flat solutions (multi-DOF variables by the node's
  // names; `index`: indexOf(the result's joint_names)).
  bool readSolution(const std::unordered_map<std::string, size_t>& index, const std::vector<double>& row,
                    std::vector<double>& values) const
  {
    values.assign(variable_count_, 0.0);
    for (size_t i = 0; i < joints_.size(); ++i)
      if (!readNodeVariables(*joints_[i], index, row, values.data() + offsets_[i]))
        return false;
    return true;
  }

  // Consistency limits as joint constraints around the seed, one per variable the node bounds: a planar
  // joint's x, y, theta; a floating joint's translation only (its rotation is a quaternion in MoveIt,
  // Euler angles in the node: not bounded).
  // Constraint: moveit_msgs's (compute_ik) or ikdiffuser_ros's (get_ik_solutions; no weight).
  template <typename Constraint>
  std::vector<Constraint> consistencyConstraints(const std::vector<double>& seed, const std::vector<double>& limits) const
  {
    std::vector<Constraint> out;
    for (size_t i = 0; i < joints_.size(); ++i)
    {
      const std::vector<std::string> names = nodeVariableNames(*joints_[i]);
      const size_t n = joints_[i]->getType() == JointModel::FLOATING ? 3 : names.size();
      for (size_t k = 0; k < n; ++k)
      {
        Constraint jc;
        jc.joint_name = names[k];
        jc.position = seed[offsets_[i] + k];
        jc.tolerance_above = jc.tolerance_below = limits[offsets_[i] + k];
        if constexpr (std::is_same_v<Constraint, moveit_msgs::msg::JointConstraint>)
          jc.weight = 1.0;
        out.push_back(jc);
      }
    }
    return out;
  }

  const moveit::core::JointModelGroup* jmg_ = nullptr;
  std::vector<const JointModel*> joints_;  // the group's active joints, getJointNames() order
  std::vector<size_t> offsets_;            // where each one's variables start in the solver's variable vector
  size_t variable_count_ = 0;
  std::vector<std::string> joint_names_, link_names_;
  int64_t num_solutions_ = 16;
  bool avoid_collisions_ = false;
  rclcpp::Node::SharedPtr client_node_;
  rclcpp::Client<GetIKSolutions>::SharedPtr solutions_client_;
  rclcpp::Client<GetPositionIK>::SharedPtr compute_ik_client_;
  rclcpp::executors::SingleThreadedExecutor::SharedPtr executor_;
  std::atomic<bool> stop_{ false };
  std::thread spinner_;
};
}  // namespace ikdiffuser_kinematics_plugin

PLUGINLIB_EXPORT_CLASS(ikdiffuser_kinematics_plugin::IKDiffuserKinematicsPlugin, kinematics::KinematicsBase)
