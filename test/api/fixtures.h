// Manifests with every field set, shared by the api tests. Thread-safe: constants.
#pragma once

namespace sandboxlet::api::testing {

inline constexpr char kFullSandboxYaml[] = R"(apiVersion: sandboxlet.dev/v1alpha1
kind: Sandbox
metadata:
  name: full
  namespace: team-a
  uid: 6f1c2d3e-0000-4000-8000-000000000001
  resourceVersion: "42"
  generation: 3
  creationTimestamp: "2024-05-01T12:00:00Z"
  deletionTimestamp: "2024-05-02T08:30:00Z"
  finalizers:
    - sandboxlet.dev/cleanup
  labels:
    app: demo
    tier: "true"
  annotations:
    example.com/note: "multi word: note"
  generateName: full-
spec:
  template: base
  vcpus: 2
  memoryMiB: 2048
  diskMiB: 4096
  power: Paused
  restoreFrom: snap-1
  restartPolicy: OnFailure
  ttlSeconds: 7200
  network:
    enabled: true
    egress: false
  env:
    - name: GREETING
      value: hello
    - name: PORT
      value: "8080"
  nodeName: node-1.example.com
status:
  phase: Paused
  conditions:
    - type: Ready
      status: "False"
      reason: Paused
      message: VM is paused
      lastTransitionTime: "2024-05-01T12:05:00Z"
      observedGeneration: 3
  observedGeneration: 3
  vmm:
    pid: 4242
    version: v41.0
    apiSocket: /var/lib/sandboxlet/vms/6f1c/api.sock
    logPath: /var/lib/sandboxlet/vms/6f1c/ch.log
    serialPath: /var/lib/sandboxlet/vms/6f1c/serial.log
  network:
    ip: 10.200.0.2
  restartCount: 1
  lastExit:
    exitCode: 1
    signal: 9
    reason: Crashed
    finishedAt: "2024-05-01T12:01:00Z"
  startedAt: "2024-05-01T12:02:00Z"
  message: paused by request
  guest:
    agentVersion: 0.3.1
)";

inline constexpr char kFullSnapshotJson[] = R"({
  "apiVersion": "sandboxlet.dev/v1alpha1",
  "kind": "SandboxSnapshot",
  "metadata": {"name": "snap-1", "namespace": "team-a", "generation": 1,
               "labels": {"app": "demo"}},
  "spec": {"sandboxName": "full", "retain": true},
  "status": {
    "phase": "Ready",
    "sizeBytes": 1234,
    "createdAt": "2024-05-01T12:10:00Z",
    "source": {"template": "base", "vcpus": 2, "memoryMiB": 2048},
    "message": "snapshot complete",
    "conditions": [{"type": "Ready", "status": "True", "reason": "Completed",
                    "lastTransitionTime": "2024-05-01T12:10:00Z", "observedGeneration": 1}],
    "observedGeneration": 1
  }
})";

}  // namespace sandboxlet::api::testing
