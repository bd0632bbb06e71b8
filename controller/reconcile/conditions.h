// Conditions and timestamps of the status the reconcilers write: Kubernetes' metav1.Condition
// rules (lastTransitionTime moves only when a condition's status flips; reason, message and
// observedGeneration are refreshed on every write) and second-precision RFC 3339 times.
// Thread-safe: pure functions.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include <google/protobuf/repeated_ptr_field.h>
#include <google/protobuf/timestamp.pb.h>

#include "sandboxlet/v1alpha1/sandbox.pb.h"

namespace sandboxlet::controller {

using Conditions = google::protobuf::RepeatedPtrField<v1alpha1::Condition>;

// Truncates to whole seconds, as Kubernetes' metav1.Time does.
google::protobuf::Timestamp ToTimestamp(std::chrono::system_clock::time_point t);
std::chrono::system_clock::time_point FromTimestamp(const google::protobuf::Timestamp& t);
// "2024-05-01T12:00:00Z".
std::string FormatTimestamp(std::chrono::system_clock::time_point t);

// Sets condition `type`. lastTransitionTime becomes `now` only when the condition is new or its
// status changes; reason, message and observedGeneration always take the given values.
void SetCondition(Conditions* conditions, std::string_view type, bool status,
                  std::string_view reason, std::string_view message,
                  std::chrono::system_clock::time_point now, int64_t generation);
// The same with an explicit status (True, False or Unknown).
void SetConditionStatus(Conditions* conditions, std::string_view type,
                        v1alpha1::Condition::ConditionStatus status, std::string_view reason,
                        std::string_view message, std::chrono::system_clock::time_point now,
                        int64_t generation);
// Removes condition `type` if present.
void RemoveCondition(Conditions* conditions, std::string_view type);
const v1alpha1::Condition* FindCondition(const Conditions& conditions, std::string_view type);
bool IsConditionTrue(const Conditions& conditions, std::string_view type);
// Sets every condition's observedGeneration (status.observedGeneration is set by the caller).
void SetObservedGeneration(Conditions* conditions, int64_t generation);

}  // namespace sandboxlet::controller
