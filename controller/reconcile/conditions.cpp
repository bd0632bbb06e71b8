#include "controller/reconcile/conditions.h"

#include <time.h>

namespace sandboxlet::controller {

google::protobuf::Timestamp ToTimestamp(std::chrono::system_clock::time_point t) {
  google::protobuf::Timestamp out;
  out.set_seconds(std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count());
  return out;
}

std::chrono::system_clock::time_point FromTimestamp(const google::protobuf::Timestamp& t) {
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::seconds(t.seconds()) + std::chrono::nanoseconds(t.nanos())));
}

std::string FormatTimestamp(std::chrono::system_clock::time_point t) {
  std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm;
  ::gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void SetCondition(Conditions* conditions, std::string_view type, bool status,
                  std::string_view reason, std::string_view message,
                  std::chrono::system_clock::time_point now, int64_t generation) {
  SetConditionStatus(conditions, type,
                     status ? v1alpha1::Condition::True : v1alpha1::Condition::False, reason,
                     message, now, generation);
}

void SetConditionStatus(Conditions* conditions, std::string_view type,
                        v1alpha1::Condition::ConditionStatus want, std::string_view reason,
                        std::string_view message, std::chrono::system_clock::time_point now,
                        int64_t generation) {
  v1alpha1::Condition* c = nullptr;
  for (auto& existing : *conditions) {
    if (existing.type() == type) c = &existing;
  }
  if (c == nullptr) {
    c = conditions->Add();
    c->set_type(std::string(type));
  }
  if (c->status() != want || !c->has_last_transition_time()) {
    c->set_status(want);
    *c->mutable_last_transition_time() = ToTimestamp(now);
  }
  c->set_reason(std::string(reason));
  c->set_message(std::string(message));
  c->set_observed_generation(generation);
}

const v1alpha1::Condition* FindCondition(const Conditions& conditions, std::string_view type) {
  for (const auto& c : conditions) {
    if (c.type() == type) return &c;
  }
  return nullptr;
}

void RemoveCondition(Conditions* conditions, std::string_view type) {
  for (int i = 0; i < conditions->size(); ++i) {
    if (conditions->Get(i).type() == type) {
      conditions->DeleteSubrange(i, 1);
      return;
    }
  }
}

bool IsConditionTrue(const Conditions& conditions, std::string_view type) {
  const v1alpha1::Condition* c = FindCondition(conditions, type);
  return c != nullptr && c->status() == v1alpha1::Condition::True;
}

void SetObservedGeneration(Conditions* conditions, int64_t generation) {
  for (auto& c : *conditions) c.set_observed_generation(generation);
}

}  // namespace sandboxlet::controller
