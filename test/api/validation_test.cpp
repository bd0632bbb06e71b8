#include "api/validation.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "api/codec.h"
#include "test/api/fixtures.h"

namespace sandboxlet::api {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kHead[] = "apiVersion: sandboxlet.dev/v1alpha1\nkind: Sandbox\n";

// Decodes, defaults and validates a Sandbox manifest the way the API server does; returns the
// rendered errors (decode errors included), empty when the object is accepted.
std::vector<std::string> Problems(const std::string& yaml, const ValidationLimits& limits = {}) {
  auto decoded = DecodeManifests(yaml);
  std::vector<FieldError> errors;
  if (!decoded.ok()) {
    errors = FieldErrorsOf(decoded.status());
    if (errors.empty()) return {std::string(decoded.status().message())};
  } else {
    Object object = decoded->at(0).object;
    SetDefaults(object);
    errors = Validate(object, limits);
  }
  std::vector<std::string> out;
  for (const FieldError& e : errors) out.push_back(e.ToString());
  return out;
}

std::string Spec(const std::string& spec_body, const std::string& name = "demo") {
  return std::string(kHead) + "metadata:\n  name: \"" + name + "\"\nspec:\n" + spec_body;
}

TEST(DefaultsTest, MinimalSandboxGetsKubernetesStyleDefaults) {
  auto decoded =
      DecodeAs<v1alpha1::Sandbox>(nlohmann::json{{"apiVersion", "sandboxlet.dev/v1alpha1"},
                                                 {"kind", "Sandbox"},
                                                 {"metadata", {{"name", "a"}}},
                                                 {"spec", {{"template", "base"}}}});
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  v1alpha1::Sandbox s = *decoded;
  SetDefaults(s);
  EXPECT_EQ(s.metadata().namespace_(), "default");
  EXPECT_EQ(s.spec().vcpus(), 1);
  EXPECT_EQ(s.spec().memory_mib(), 512);
  EXPECT_EQ(s.spec().power(), v1alpha1::SandboxSpec::Running);
  EXPECT_EQ(s.spec().restart_policy(), v1alpha1::SandboxSpec::Always);
  EXPECT_TRUE(s.spec().network().enabled());
  EXPECT_TRUE(s.spec().network().egress());
  EXPECT_EQ(s.spec().disk_mib(), 0);
  EXPECT_THAT(Validate(s), IsEmpty());
  auto json = ToJson(s);
  ASSERT_TRUE(json.ok());
  EXPECT_EQ((*json)["spec"]["power"], "Running");
  EXPECT_EQ((*json)["spec"]["restartPolicy"], "Always");
}

TEST(DefaultsTest, RestoreTakesCpuAndMemoryFromTheSnapshot) {
  v1alpha1::Sandbox s;
  s.mutable_metadata()->set_name("r");
  s.mutable_spec()->set_restore_from("snap");
  SetDefaults(s);
  EXPECT_FALSE(s.spec().has_vcpus());
  EXPECT_FALSE(s.spec().has_memory_mib());
  EXPECT_EQ(s.api_version(), "sandboxlet.dev/v1alpha1");
  EXPECT_EQ(s.kind(), "Sandbox");
  EXPECT_THAT(Validate(s), IsEmpty());
}

TEST(DefaultsTest, NoNetworkMeansNoEgressAndExplicitValuesAreKept) {
  v1alpha1::Sandbox s;
  s.mutable_spec()->mutable_network()->set_enabled(false);
  s.mutable_spec()->set_vcpus(4);
  s.mutable_spec()->set_power(v1alpha1::SandboxSpec::Stopped);
  SetDefaults(s);
  EXPECT_FALSE(s.spec().network().egress());
  EXPECT_EQ(s.spec().vcpus(), 4);
  EXPECT_EQ(s.spec().power(), v1alpha1::SandboxSpec::Stopped);
}

TEST(DefaultsTest, SnapshotGetsNamespaceOnly) {
  v1alpha1::SandboxSnapshot s;
  s.mutable_spec()->set_sandbox_name("a");
  SetDefaults(s);
  EXPECT_EQ(s.metadata().namespace_(), "default");
  EXPECT_FALSE(s.spec().has_retain());
}

TEST(ValidationTest, FullObjectsAreValid) {
  EXPECT_THAT(Problems(testing::kFullSandboxYaml), IsEmpty());
  EXPECT_THAT(Problems(testing::kFullSnapshotJson), IsEmpty());
}

TEST(ValidationTest, UnknownFieldsSuggestTheClosestField) {
  EXPECT_THAT(Problems(Spec("  template: base\n  vcpu: 2\n")),
              ElementsAre("spec.vcpu: unknown field; did you mean spec.vcpus?"));
  EXPECT_THAT(Problems(Spec("  template: base\n  memoryMib: 1024\n")),
              ElementsAre("spec.memoryMib: unknown field; did you mean spec.memoryMiB?"));
  EXPECT_THAT(Problems(Spec("  template: base\n  memory_mib: 1024\n")),
              ElementsAre("spec.memory_mib: unknown field; did you mean spec.memoryMiB?"));
  EXPECT_THAT(Problems(Spec("  template: base\n  network:\n    egres: true\n")),
              ElementsAre("spec.network.egres: unknown field; did you mean spec.network.egress?"));
  EXPECT_THAT(Problems(Spec("  template: base\n  env:\n    - name: A\n      valu: b\n")),
              ElementsAre("spec.env[0].valu: unknown field; did you mean spec.env[0].value?"));
  EXPECT_THAT(Problems(Spec("  template: base\n  restart: Never\n")),
              ElementsAre("spec.restart: unknown field; did you mean spec.restartPolicy?"));
  EXPECT_THAT(Problems(Spec("  template: base\n  flavour: large\n")),
              ElementsAre("spec.flavour: unknown field"));
  EXPECT_THAT(Problems(std::string(kHead) + "metadata: {name: a}\nspec: {template: b}\nspce: {}\n"),
              ElementsAre("spce: unknown field; did you mean spec?"));
}

TEST(ValidationTest, UnknownFieldMakesTheWholeMessageKubernetesShaped) {
  auto decoded = DecodeManifests(Spec("  template: base\n  vcpu: 2\n"));
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().message(),
            "Sandbox.sandboxlet.dev \"demo\" is invalid: spec.vcpu: unknown field; did you mean "
            "spec.vcpus?");
}

TEST(ValidationTest, WarnModeReturnsWarningsAndDropsUnknownFields) {
  std::string yaml = Spec("  template: base\n  vcpu: 2\n  network:\n    egres: true\n");
  auto warned = DecodeManifests(yaml, {FieldValidation::kWarn});
  ASSERT_TRUE(warned.ok()) << warned.status();
  EXPECT_THAT(warned->at(0).warnings,
              ElementsAre("spec.network.egres: unknown field; did you mean spec.network.egress?",
                          "spec.vcpu: unknown field; did you mean spec.vcpus?"));
  const auto& s = std::get<v1alpha1::Sandbox>(warned->at(0).object);
  EXPECT_FALSE(s.spec().has_vcpus());
  EXPECT_EQ(s.spec().template_(), "base");

  auto ignored = DecodeManifests(yaml, {FieldValidation::kIgnore});
  ASSERT_TRUE(ignored.ok());
  EXPECT_THAT(ignored->at(0).warnings, IsEmpty());

  // Warn mode still rejects type errors: only unknown fields become warnings.
  auto typed =
      DecodeManifests(Spec("  template: base\n  vcpus: two\n  x: 1\n"), {FieldValidation::kWarn});
  ASSERT_FALSE(typed.ok());
  EXPECT_THAT(FieldErrorsOf(typed.status()).size(), 1u);
}

TEST(ValidationTest, ParseFieldValidationAcceptsKubectlSpellings) {
  EXPECT_EQ(*ParseFieldValidation("Strict"), FieldValidation::kStrict);
  EXPECT_EQ(*ParseFieldValidation(""), FieldValidation::kStrict);
  EXPECT_EQ(*ParseFieldValidation("warn"), FieldValidation::kWarn);
  EXPECT_EQ(*ParseFieldValidation("Ignore"), FieldValidation::kIgnore);
  EXPECT_FALSE(ParseFieldValidation("loose").ok());
}

TEST(ValidationTest, WrongTypesNameThePathAndTheExpectedType) {
  EXPECT_THAT(Problems(Spec("  template: base\n  vcpus: two\n")),
              ElementsAre("spec.vcpus: Invalid value: \"two\": must be an integer"));
  EXPECT_THAT(Problems(Spec("  template: base\n  vcpus: \"2\"\n")),
              ElementsAre("spec.vcpus: Invalid value: \"2\": must be an integer"));
  EXPECT_THAT(Problems(Spec("  template: base\n  ttlSeconds: 1.5\n")),
              ElementsAre("spec.ttlSeconds: Invalid value: 1.5: must be an integer"));
  EXPECT_THAT(Problems(Spec("  template: base\n  vcpus: 4294967296\n")),
              ElementsAre("spec.vcpus: Invalid value: 4294967296: must fit in a signed 32-bit "
                          "integer"));
  EXPECT_THAT(Problems(Spec("  template: base\n  network:\n    enabled: \"true\"\n")),
              ElementsAre("spec.network.enabled: Invalid value: \"true\": must be a boolean"));
  EXPECT_THAT(Problems(Spec("  template: 12\n")),
              ElementsAre("spec.template: Invalid value: 12: must be a string"));
  EXPECT_THAT(Problems(Spec("  template: base\n  env:\n    name: A\n")),
              ElementsAre("spec.env: Invalid value: {\"name\":\"A\"}: must be a list"));
  EXPECT_THAT(Problems(Spec("  template: base\n  env:\n    - name: A\n      value: 8080\n")),
              ElementsAre("spec.env[0].value: Invalid value: 8080: must be a string"));
  EXPECT_THAT(Problems(Spec("  network: on\n  template: base\n")),
              ElementsAre("spec.network: Invalid value: \"on\": must be an object, not a string"));
  EXPECT_THAT(
      Problems(std::string(kHead) + "metadata:\n  name: a\n  labels: [x]\nspec: {template: b}\n"),
      ElementsAre("metadata.labels: Invalid value: [\"x\"]: must be an object"));
}

TEST(ValidationTest, NamesThatCouldEscapeAPathAreRejected) {
  EXPECT_THAT(
      Problems(Spec("  template: base\n", "../etc")),
      ElementsAre("metadata.name: Invalid value: \"../etc\": must be a DNS-1123 label: at most 63 "
                  "lowercase letters, digits or '-', starting and ending with a letter or digit"));
  EXPECT_THAT(Problems(Spec("  template: ../../bin\n")),
              ElementsAre(HasSubstr("spec.template: Invalid value: \"../../bin\": must be a "
                                    "DNS-1123 subdomain")));
  EXPECT_THAT(Problems(Spec("  restoreFrom: a/b\n")),
              ElementsAre(HasSubstr("spec.restoreFrom: Invalid value: \"a/b\": must be a DNS-1123 "
                                    "subdomain")));
  // Sandbox names reach interface names: no dots, at most 63 characters.
  EXPECT_THAT(Problems(Spec("  template: base\n", "a.b")),
              ElementsAre(HasSubstr("metadata.name: Invalid value: \"a.b\"")));
  EXPECT_THAT(Problems(Spec("  template: base\n", std::string(64, 'a'))),
              ElementsAre("metadata.name: Too long: may not be more than 63 characters"));
  EXPECT_THAT(Problems(std::string(kHead) + "metadata: {name: a, namespace: Prod}\nspec: "
                                            "{template: b}\n"),
              ElementsAre(HasSubstr("metadata.namespace: Invalid value: \"Prod\"")));
}

TEST(ValidationTest, NameOrGenerateNameIsRequired) {
  EXPECT_THAT(Problems(std::string(kHead) + "metadata: {}\nspec: {template: b}\n"),
              ElementsAre("metadata.name: Required value: name or generateName is required"));
  EXPECT_THAT(
      Problems(std::string(kHead) + "metadata: {generateName: demo-}\nspec: {template: b}\n"),
      IsEmpty());
  EXPECT_THAT(
      Problems(std::string(kHead) + "metadata: {generateName: Demo-}\nspec: {template: b}\n"),
      ElementsAre(HasSubstr("metadata.generateName: Invalid value: \"Demo-\": with 5 generated "
                            "characters appended it must be a DNS-1123 label")));
}

TEST(ValidationTest, RangesComeFromTheSchema) {
  EXPECT_THAT(Problems(Spec("  template: base\n  vcpus: 0\n")),
              ElementsAre("spec.vcpus: Invalid value: 0: must be between 1 and 256"));
  EXPECT_THAT(Problems(Spec("  template: base\n  vcpus: 300\n")),
              ElementsAre("spec.vcpus: Invalid value: 300: must be between 1 and 256"));
  EXPECT_THAT(Problems(Spec("  template: base\n  memoryMiB: 32\n")),
              ElementsAre("spec.memoryMiB: Invalid value: 32: must be between 64 and 1048576"));
  EXPECT_THAT(
      Problems(Spec("  template: base\n  memoryMiB: 2097152\n")),
      ElementsAre("spec.memoryMiB: Invalid value: 2097152: must be between 64 and 1048576"));
  EXPECT_THAT(Problems(Spec("  template: base\n  diskMiB: -1\n")),
              ElementsAre("spec.diskMiB: Invalid value: -1: must be greater than or equal to 0"));
  EXPECT_THAT(
      Problems(Spec("  template: base\n  ttlSeconds: -5\n")),
      ElementsAre("spec.ttlSeconds: Invalid value: -5: must be greater than or equal to 0"));
  EXPECT_THAT(Problems(Spec("  template: base\n  vcpus: 256\n  memoryMiB: 1048576\n")), IsEmpty());
}

TEST(ValidationTest, NodeLimitTightensTheCpuRange) {
  ValidationLimits limits{.max_vcpus = 4};
  EXPECT_THAT(Problems(Spec("  template: base\n  vcpus: 8\n"), limits),
              ElementsAre("spec.vcpus: Invalid value: 8: must be at most 4, the CPUs this node "
                          "offers"));
  EXPECT_THAT(Problems(Spec("  template: base\n  vcpus: 4\n"), limits), IsEmpty());
}

TEST(ValidationTest, EnumsAcceptOnlyTheirPascalCaseValues) {
  EXPECT_THAT(Problems(Spec("  template: base\n  power: Runing\n")),
              ElementsAre("spec.power: Unsupported value: \"Runing\": supported values: "
                          "\"Running\", \"Paused\", \"Hibernated\", \"Stopped\""));
  EXPECT_THAT(Problems(Spec("  template: base\n  power: PowerUnset\n")),
              ElementsAre(HasSubstr("spec.power: Unsupported value: \"PowerUnset\"")));
  EXPECT_THAT(Problems(Spec("  template: base\n  restartPolicy: 1\n")),
              ElementsAre("spec.restartPolicy: Unsupported value: 1: supported values: "
                          "\"Always\", \"OnFailure\", \"Never\""));
  // Messages built in code are checked too.
  v1alpha1::Sandbox s;
  s.mutable_metadata()->set_name("a");
  s.mutable_spec()->set_template_("base");
  SetDefaults(s);
  s.mutable_spec()->set_power(static_cast<v1alpha1::SandboxSpec::Power>(17));
  ASSERT_EQ(Validate(s).size(), 1u);
  EXPECT_EQ(Validate(s)[0].path, "spec.power");
  EXPECT_EQ(Validate(s)[0].type, FieldErrorType::kNotSupported);
}

TEST(ValidationTest, EnvNamesAreUniqueCIdentifiers) {
  EXPECT_THAT(Problems(Spec("  template: base\n  env:\n    - {name: A, value: x}\n"
                            "    - {name: A, value: y}\n")),
              ElementsAre("spec.env[1].name: Duplicate value: \"A\""));
  EXPECT_THAT(Problems(Spec("  template: base\n  env:\n    - {name: 1A}\n    - {name: B-C}\n")),
              ElementsAre(HasSubstr("spec.env[0].name: Invalid value: \"1A\": must be a C "
                                    "identifier"),
                          HasSubstr("spec.env[1].name: Invalid value: \"B-C\"")));
  EXPECT_THAT(Problems(Spec("  template: base\n  env:\n    - {value: x}\n")),
              ElementsAre("spec.env[0].name: Required value"));
}

TEST(ValidationTest, TemplateOrRestoreFromIsRequired) {
  EXPECT_THAT(Problems(Spec("  vcpus: 1\n")),
              ElementsAre("spec.template: Required value: one of spec.template or "
                          "spec.restoreFrom is required"));
  // Defaulting fills in a missing spec, so only the template is reported.
  EXPECT_THAT(Problems(std::string(kHead) + "metadata: {name: a}\n"),
              ElementsAre("spec.template: Required value: one of spec.template or "
                          "spec.restoreFrom is required"));
}

TEST(ValidationTest, EgressNeedsANetwork) {
  EXPECT_THAT(Problems(Spec("  template: base\n  network: {enabled: false, egress: true}\n")),
              ElementsAre("spec.network.egress: Forbidden: egress requires spec.network.enabled"));
}

TEST(ValidationTest, LabelsAnnotationsAndFinalizersFollowKubernetesRules) {
  std::string yaml = std::string(kHead) +
                     "metadata:\n  name: a\n  labels:\n    -bad: x\n    ok: \"has space\"\n"
                     "    example.com/fine: \"v1.2_3\"\n  annotations:\n    \"Bad_/x\": y\n"
                     "  finalizers: [sandboxlet.dev/cleanup, sandboxlet.dev/cleanup, \"x/\"]\n"
                     "spec: {template: b}\n";
  EXPECT_THAT(
      Problems(yaml),
      ElementsAre(HasSubstr("metadata.labels: Invalid value: \"-bad\": must be an optional DNS "
                            "subdomain prefix"),
                  HasSubstr("metadata.labels[ok]: Invalid value: \"has space\": a label value"),
                  HasSubstr("metadata.annotations: Invalid value: \"Bad_/x\": the prefix before "
                            "'/' must be a DNS-1123 subdomain"),
                  "metadata.finalizers[1]: Duplicate value: \"sandboxlet.dev/cleanup\"",
                  HasSubstr("metadata.finalizers[2]: Invalid value: \"x/\"")));
}

TEST(ValidationTest, SnapshotNeedsAValidSandboxName) {
  std::string head = "apiVersion: sandboxlet.dev/v1alpha1\nkind: SandboxSnapshot\n";
  EXPECT_THAT(Problems(head + "metadata: {name: snap.v1}\nspec: {sandboxName: demo}\n"), IsEmpty());
  EXPECT_THAT(Problems(head + "metadata: {name: s}\nspec: {}\n"),
              ElementsAre("spec.sandboxName: Required value"));
  EXPECT_THAT(Problems(head + "metadata: {name: s}\n"), ElementsAre("spec: Required value"));
  EXPECT_THAT(Problems(head + "metadata: {name: s}\nspec: {sandboxName: ../x}\n"),
              ElementsAre(HasSubstr("spec.sandboxName: Invalid value: \"../x\"")));
  EXPECT_THAT(Problems(head + "metadata: {name: s}\nspec: {sandboxName: a, retain: maybe}\n"),
              ElementsAre("spec.retain: Invalid value: \"maybe\": must be a boolean"));
}

TEST(ValidationTest, SeveralErrorsMakeOneKubernetesStyleSummary) {
  v1alpha1::Sandbox s;
  s.mutable_metadata()->set_name("x");
  s.mutable_spec()->set_template_("base");
  s.mutable_spec()->set_vcpus(0);
  s.mutable_spec()->set_memory_mib(1);
  SetDefaults(s);
  absl::Status status = ValidateObject(s);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "Sandbox.sandboxlet.dev \"x\" is invalid: [spec.vcpus: Invalid value: 0: must be "
            "between 1 and 256, spec.memoryMiB: Invalid value: 1: must be between 64 and 1048576]");
  std::vector<FieldError> errors = FieldErrorsOf(status);
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_EQ(errors[0],
            (FieldError{"spec.vcpus", FieldErrorType::kInvalid, 0, "must be between 1 and 256"}));
  EXPECT_EQ(CauseReason(errors[1].type), "FieldValueInvalid");
  EXPECT_THAT(FieldErrorsOf(absl::InvalidArgumentError("other")), IsEmpty());
}

TEST(ValidationTest, WrongTypeMetaOnABuiltObjectIsReported) {
  v1alpha1::SandboxSnapshot s;
  s.set_api_version("v1");
  s.set_kind("Sandbox");
  s.mutable_metadata()->set_name("s");
  s.mutable_spec()->set_sandbox_name("a");
  SetDefaults(s);
  std::vector<std::string> got;
  for (const FieldError& e : Validate(s)) got.push_back(e.ToString());
  EXPECT_THAT(got, ElementsAre("apiVersion: Invalid value: \"v1\": must be sandboxlet.dev/v1alpha1",
                               "kind: Invalid value: \"Sandbox\": must be SandboxSnapshot"));
}

}  // namespace
}  // namespace sandboxlet::api
