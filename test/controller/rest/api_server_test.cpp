// HTTP-level tests of the local REST API: discovery, OpenAPI, CRUD semantics and errors as Status
// objects, tables, watches, limits, TLS + token. The kubectl end-to-end tests are in
// kubectl_e2e_test.cpp.
#include "controller/rest/api_server.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "api/codec.h"
#include "controller/rest/kubeconfig.h"
#include "runtime/base/command.h"
#include "test/controller/rest/rest_test_support.h"

namespace sandboxlet::rest {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using testing::HttpCall;
using testing::HttpClient;
using testing::HttpResult;
using testing::kSandboxes;
using testing::SandboxJson;
using testing::ServerUnderTest;

class ApiServerTest : public ::testing::Test {
 protected:
  ApiServerTest() : client_(srv_.server ? srv_.server->url() : "http://127.0.0.1:1") {}

  json Create(const json& object) {
    HttpResult r = client_.Send("POST", kSandboxes, object.dump());
    EXPECT_EQ(r.code, 201) << r.body;
    return r.Json();
  }

  ServerUnderTest srv_;
  HttpClient client_;
};

TEST_F(ApiServerTest, VersionNamesAKubernetesReleaseKubectlCanDispatchOn) {
  json v = client_.Get("/version").Json();
  EXPECT_EQ(v["major"], "1");
  EXPECT_THAT(v["gitVersion"].get<std::string>(), ::testing::StartsWith("v1."));
}

TEST_F(ApiServerTest, AggregatedDiscoveryFollowsTheAcceptHeader) {
  for (std::string version : {"v2", "v2beta1"}) {
    HttpResult r =
        client_.Get("/apis", {"Accept: application/json;g=apidiscovery.k8s.io;v=" + version +
                              ";as=APIGroupDiscoveryList,application/json"});
    ASSERT_EQ(r.code, 200);
    EXPECT_EQ(r.Header("content-type"),
              "application/json;g=apidiscovery.k8s.io;v=" + version + ";as=APIGroupDiscoveryList");
    json d = r.Json();
    EXPECT_EQ(d["kind"], "APIGroupDiscoveryList");
    ASSERT_EQ(d["items"].size(), 1u);
    EXPECT_EQ(d["items"][0]["metadata"]["name"], "sandboxlet.dev");
    json resources = d["items"][0]["versions"][0]["resources"];
    ASSERT_EQ(resources.size(), 2u);
    EXPECT_EQ(resources[0]["resource"], "sandboxes");
    EXPECT_EQ(resources[0]["shortNames"], json({"sbx"}));
    EXPECT_EQ(resources[0]["subresources"][0]["subresource"], "status");
    EXPECT_EQ(resources[1]["resource"], "sandboxsnapshots");
  }
  json core = client_
                  .Get("/api", {"Accept: application/json;g=apidiscovery.k8s.io;v=v2;as="
                                "APIGroupDiscoveryList"})
                  .Json();
  EXPECT_EQ(core["items"][0]["metadata"]["name"], "");
  EXPECT_EQ(core["items"][0]["versions"][0]["resources"][0]["resource"], "events");
  // Without the aggregated media type: the legacy documents.
  EXPECT_EQ(client_.Get("/apis").Json()["kind"], "APIGroupList");
  EXPECT_EQ(client_.Get("/api").Json()["versions"], json({"v1"}));
  json list = client_.Get("/apis/sandboxlet.dev/v1alpha1").Json();
  EXPECT_EQ(list["kind"], "APIResourceList");
  std::vector<std::string> names;
  for (const auto& r : list["resources"]) names.push_back(r["name"]);
  EXPECT_THAT(names, ::testing::ElementsAre("sandboxes", "sandboxes/status", "sandboxsnapshots",
                                            "sandboxsnapshots/status"));
  EXPECT_EQ(client_.Get("/apis/nope.dev/v1").code, 404);
}

TEST_F(ApiServerTest, OpenApiV3DeclaresFieldValidationOnPatch) {
  json index = client_.Get("/openapi/v3").Json();
  std::string url = index["paths"]["apis/sandboxlet.dev/v1alpha1"]["serverRelativeURL"];
  EXPECT_THAT(url, HasSubstr("?hash="));
  json doc = client_.Get(url).Json();
  json patch = doc["paths"]["/apis/sandboxlet.dev/v1alpha1/namespaces/{namespace}/sandboxes/{name}"]
                  ["patch"];
  EXPECT_EQ(patch["x-kubernetes-group-version-kind"]["kind"], "Sandbox");
  std::vector<std::string> params;
  for (const auto& p : patch["parameters"]) params.push_back(p["name"]);
  EXPECT_THAT(params, ::testing::Contains("fieldValidation"));
  EXPECT_FALSE(patch["requestBody"]["content"].contains("application/strategic-merge-patch+json"));
  json schema = doc["components"]["schemas"]["dev.sandboxlet.v1alpha1.Sandbox"];
  EXPECT_EQ(schema["x-kubernetes-group-version-kind"][0]["kind"], "Sandbox");
  EXPECT_EQ(schema["properties"]["spec"]["properties"]["vcpus"]["maximum"], 256);
  // v2 is JSON only.
  EXPECT_EQ(client_
                .Get("/openapi/v2",
                     {"Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf"})
                .code,
            406);
  EXPECT_EQ(client_.Get("/openapi/v2").Json()["swagger"], "2.0");
}

TEST_F(ApiServerTest, CreateGetListUpdateDelete) {
  json created = Create(SandboxJson("a"));
  EXPECT_EQ(created["metadata"]["generation"], 1);
  EXPECT_EQ(created["spec"]["power"], "Running");  // defaulted
  EXPECT_FALSE(created["metadata"]["uid"].get<std::string>().empty());
  EXPECT_EQ(created["metadata"]["managedFields"][0]["manager"], "unknown");

  HttpResult dup = client_.Send("POST", kSandboxes, SandboxJson("a").dump());
  EXPECT_EQ(dup.code, 409);
  EXPECT_EQ(dup.Json()["reason"], "AlreadyExists");
  EXPECT_EQ(dup.Json()["kind"], "Status");

  json got = client_.Get(kSandboxes + "/a").Json();
  EXPECT_EQ(got["metadata"]["uid"], created["metadata"]["uid"]);
  HttpResult missing = client_.Get(kSandboxes + "/zz");
  EXPECT_EQ(missing.code, 404);
  EXPECT_EQ(missing.Json()["message"], "sandboxes.sandboxlet.dev \"zz\" not found");
  EXPECT_EQ(missing.Json()["details"]["name"], "zz");

  json update = got;
  update["spec"]["vcpus"] = 3;
  HttpResult put = client_.Send("PUT", kSandboxes + "/a", update.dump());
  ASSERT_EQ(put.code, 200) << put.body;
  EXPECT_EQ(put.Json()["metadata"]["generation"], 2);
  // The same body again carries a stale resourceVersion.
  HttpResult stale = client_.Send("PUT", kSandboxes + "/a", update.dump());
  EXPECT_EQ(stale.code, 409);
  EXPECT_EQ(stale.Json()["reason"], "Conflict");

  Create(SandboxJson("b"));
  json list = client_.Get(kSandboxes).Json();
  EXPECT_EQ(list["kind"], "SandboxList");
  EXPECT_EQ(list["items"].size(), 2u);
  json all = client_.Get("/apis/sandboxlet.dev/v1alpha1/sandboxes").Json();
  EXPECT_EQ(all["items"].size(), 2u);

  HttpResult del = client_.Send("DELETE", kSandboxes + "/a", "");
  EXPECT_EQ(del.code, 200);
  EXPECT_EQ(del.Json()["status"], "Success");
  EXPECT_EQ(client_.Get(kSandboxes + "/a").code, 404);
}

TEST_F(ApiServerTest, ListSelectorsAndPages) {
  for (const char* n : {"a", "b", "c"}) {
    json o = SandboxJson(n);
    o["spec"]["nodeName"] = std::string(n) == "b" ? "node-2" : "node-1";
    Create(o);
  }
  EXPECT_EQ(client_.Get(kSandboxes + "?labelSelector=app%3Db").Json()["items"].size(), 1u);
  json by_node = client_.Get(kSandboxes + "?fieldSelector=spec.nodeName%3Dnode-1").Json();
  EXPECT_EQ(by_node["items"].size(), 2u);
  HttpResult bad = client_.Get(kSandboxes + "?fieldSelector=spec.template%3Dx");
  EXPECT_EQ(bad.code, 400);
  EXPECT_THAT(bad.Json()["message"].get<std::string>(), HasSubstr("field label not supported"));

  json page1 = client_.Get(kSandboxes + "?limit=2").Json();
  ASSERT_EQ(page1["items"].size(), 2u);
  std::string cont = page1["metadata"]["continue"];
  json page2 = client_.Get(kSandboxes + "?limit=2&continue=" + cont).Json();
  ASSERT_EQ(page2["items"].size(), 1u);
  EXPECT_EQ(page2["items"][0]["metadata"]["name"], "c");
  EXPECT_FALSE(page2["metadata"].contains("continue"));
}

TEST_F(ApiServerTest, InvalidObjectsGive422WithCauses) {
  json o = SandboxJson("bad", 0);
  HttpResult r = client_.Send("POST", kSandboxes, o.dump());
  ASSERT_EQ(r.code, 422) << r.body;
  json s = r.Json();
  EXPECT_EQ(s["reason"], "Invalid");
  EXPECT_EQ(s["details"]["kind"], "Sandbox");
  ASSERT_EQ(s["details"]["causes"].size(), 1u);
  EXPECT_EQ(s["details"]["causes"][0]["field"], "spec.vcpus");
  EXPECT_EQ(s["details"]["causes"][0]["reason"], "FieldValueInvalid");
  EXPECT_THAT(s["details"]["causes"][0]["message"].get<std::string>(),
              HasSubstr("Invalid value: 0"));

  HttpResult malformed = client_.Send("POST", kSandboxes, "{\"apiVersion\": ");
  EXPECT_EQ(malformed.code, 400);
  EXPECT_EQ(malformed.Json()["reason"], "BadRequest");

  json wrong_kind = SandboxJson("x");
  wrong_kind["kind"] = "SandboxSnapshot";
  EXPECT_EQ(client_.Send("POST", kSandboxes, wrong_kind.dump()).code, 400);
}

TEST_F(ApiServerTest, UnknownFieldsFollowFieldValidation) {
  json o = SandboxJson("u");
  o["spec"]["vcpu"] = 2;
  HttpResult strict = client_.Send("POST", kSandboxes + "?fieldValidation=Strict", o.dump());
  EXPECT_EQ(strict.code, 400);
  EXPECT_THAT(strict.Json()["message"].get<std::string>(),
              HasSubstr("strict decoding error: unknown field \"spec.vcpu\""));

  HttpResult warn = client_.Send("POST", kSandboxes + "?fieldValidation=Warn", o.dump());
  ASSERT_EQ(warn.code, 201) << warn.body;
  EXPECT_THAT(warn.Header("warning"), HasSubstr("299 - \""));
  EXPECT_THAT(warn.Header("warning"), HasSubstr("spec.vcpu"));
  EXPECT_FALSE(warn.Json()["spec"].contains("vcpu"));

  o["metadata"]["name"] = "u2";
  HttpResult ignore = client_.Send("POST", kSandboxes + "?fieldValidation=Ignore", o.dump());
  EXPECT_EQ(ignore.code, 201);
  EXPECT_EQ(ignore.Header("warning"), "");
  EXPECT_EQ(client_.Send("POST", kSandboxes + "?fieldValidation=Loose", o.dump()).code, 400);
}

TEST_F(ApiServerTest, DryRunStoresNothing) {
  HttpResult r = client_.Send("POST", kSandboxes + "?dryRun=All", SandboxJson("d").dump());
  EXPECT_EQ(r.code, 201);
  EXPECT_EQ(r.Json()["spec"]["power"], "Running");
  EXPECT_EQ(client_.Get(kSandboxes + "/d").code, 404);
}

TEST_F(ApiServerTest, PatchTypes) {
  Create(SandboxJson("p"));
  HttpResult merge = client_.Send("PATCH", kSandboxes + "/p?fieldManager=tester",
                                  R"({"spec":{"vcpus":4}})", "application/merge-patch+json");
  ASSERT_EQ(merge.code, 200) << merge.body;
  EXPECT_EQ(merge.Json()["spec"]["vcpus"], 4);
  bool tester_owns = false;
  json merged = merge.Json();
  for (const auto& e : merged["metadata"]["managedFields"]) {
    if (e["manager"] == "tester") tester_owns = e["fieldsV1"]["f:spec"].contains("f:vcpus");
  }
  EXPECT_TRUE(tester_owns);

  HttpResult jp = client_.Send("PATCH", kSandboxes + "/p",
                               R"([{"op":"test","path":"/spec/vcpus","value":4},
                                   {"op":"replace","path":"/spec/vcpus","value":5}])",
                               "application/json-patch+json");
  ASSERT_EQ(jp.code, 200) << jp.body;
  EXPECT_EQ(jp.Json()["spec"]["vcpus"], 5);
  HttpResult failed =
      client_.Send("PATCH", kSandboxes + "/p", R"([{"op":"test","path":"/spec/vcpus","value":4}])",
                   "application/json-patch+json");
  EXPECT_EQ(failed.code, 422);
  EXPECT_THAT(failed.Json()["message"].get<std::string>(), HasSubstr("value is 5, not 4"));

  HttpResult smp = client_.Send("PATCH", kSandboxes + "/p", R"({"spec":{"vcpus":6}})",
                                "application/strategic-merge-patch+json");
  EXPECT_EQ(smp.code, 415);
  EXPECT_EQ(smp.Json()["reason"], "UnsupportedMediaType");

  HttpResult invalid = client_.Send("PATCH", kSandboxes + "/p", R"({"spec":{"vcpus":0}})",
                                    "application/merge-patch+json");
  EXPECT_EQ(invalid.code, 422);
  EXPECT_EQ(client_.Get(kSandboxes + "/p").Json()["spec"]["vcpus"], 5);
}

TEST_F(ApiServerTest, ServerSideApplyConflictsAndForce) {
  std::string cfg = R"(apiVersion: sandboxlet.dev/v1alpha1
kind: Sandbox
metadata:
  name: s
spec:
  template: ubuntu
  vcpus: 2
)";
  HttpResult first = client_.Send("PATCH", kSandboxes + "/s?fieldManager=alice", cfg,
                                  "application/apply-patch+yaml");
  ASSERT_EQ(first.code, 201) << first.body;
  HttpResult again = client_.Send("PATCH", kSandboxes + "/s?fieldManager=alice", cfg,
                                  "application/apply-patch+yaml");
  EXPECT_EQ(again.code, 200);
  EXPECT_EQ(again.Json()["metadata"]["resourceVersion"],
            first.Json()["metadata"]["resourceVersion"]);

  std::string changed = cfg;
  changed.replace(changed.find("vcpus: 2"), 8, "vcpus: 4");
  HttpResult conflict = client_.Send("PATCH", kSandboxes + "/s?fieldManager=bob", changed,
                                     "application/apply-patch+yaml");
  ASSERT_EQ(conflict.code, 409) << conflict.body;
  json s = conflict.Json();
  EXPECT_EQ(s["reason"], "Conflict");
  ASSERT_EQ(s["details"]["causes"].size(), 1u);
  EXPECT_EQ(s["details"]["causes"][0]["field"], ".spec.vcpus");
  EXPECT_EQ(s["details"]["causes"][0]["reason"], "FieldManagerConflict");
  EXPECT_THAT(s["message"].get<std::string>(), HasSubstr("conflict with \"alice\""));

  HttpResult forced = client_.Send("PATCH", kSandboxes + "/s?fieldManager=bob&force=true", changed,
                                   "application/apply-patch+yaml");
  ASSERT_EQ(forced.code, 200) << forced.body;
  EXPECT_EQ(forced.Json()["spec"]["vcpus"], 4);

  EXPECT_EQ(client_.Send("PATCH", kSandboxes + "/s", cfg, "application/apply-patch+yaml").code,
            400);  // no fieldManager
}

TEST_F(ApiServerTest, StatusSubresourceWritesOnlyStatus) {
  json o = Create(SandboxJson("st"));
  o["status"] = {{"phase", "Running"}};
  o["spec"]["vcpus"] = 7;
  HttpResult r = client_.Send("PUT", kSandboxes + "/st/status", o.dump());
  ASSERT_EQ(r.code, 200) << r.body;
  EXPECT_EQ(r.Json()["status"]["phase"], "Running");
  EXPECT_EQ(r.Json()["spec"]["vcpus"], 2);
  HttpResult bad =
      client_.Send("PATCH", kSandboxes + "/st/status", R"({"status":{"phase":"Dancing"}})",
                   "application/merge-patch+json");
  EXPECT_EQ(bad.code, 422) << bad.body;
  // Create ignores status.
  json with_status = SandboxJson("st2");
  with_status["status"] = {{"phase", "Running"}};
  EXPECT_FALSE(Create(with_status).contains("status"));
}

TEST_F(ApiServerTest, DeleteHonoursPreconditionsAndFinalizers) {
  json o = SandboxJson("f");
  o["metadata"]["finalizers"] = {"sandboxlet.dev/vm"};
  json created = Create(o);
  HttpResult wrong =
      client_.Send("DELETE", kSandboxes + "/f", R"({"preconditions":{"uid":"not-the-uid"}})");
  EXPECT_EQ(wrong.code, 409) << wrong.body;
  HttpResult del = client_.Send("DELETE", kSandboxes + "/f", "");
  ASSERT_EQ(del.code, 200);
  EXPECT_TRUE(del.Json()["metadata"].contains("deletionTimestamp"));
  EXPECT_EQ(client_.Get(kSandboxes + "/f").code, 200);
  HttpResult unfinalize =
      client_.Send("PATCH", kSandboxes + "/f", R"({"metadata":{"finalizers":null}})",
                   "application/merge-patch+json");
  EXPECT_EQ(unfinalize.code, 200) << unfinalize.body;
  EXPECT_EQ(client_.Get(kSandboxes + "/f").code, 404);
}

TEST_F(ApiServerTest, TablesForKubectl) {
  json o = Create(SandboxJson("t"));
  std::string accept =
      "Accept: application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;"
      "g=meta.k8s.io,application/json";
  json table = client_.Get(kSandboxes, {accept}).Json();
  EXPECT_EQ(table["kind"], "Table");
  EXPECT_EQ(table["apiVersion"], "meta.k8s.io/v1");
  std::vector<std::string> cols;
  for (const auto& c : table["columnDefinitions"]) {
    if (c["priority"] == 0) cols.push_back(c["name"]);
  }
  EXPECT_THAT(cols, ::testing::ElementsAre("Name", "Phase", "IP", "VCPUs", "Memory", "Age"));
  ASSERT_EQ(table["rows"].size(), 1u);
  EXPECT_EQ(table["rows"][0]["cells"][0], "t");
  EXPECT_EQ(table["rows"][0]["cells"][4], "512Mi");
  EXPECT_EQ(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
  json with_object = client_.Get(kSandboxes + "/t?includeObject=Object", {accept}).Json();
  EXPECT_EQ(with_object["rows"][0]["object"]["spec"]["template"], "ubuntu");
}

TEST_F(ApiServerTest, WatchStreamsChangesAsJsonLines) {
  json o = Create(SandboxJson("w"));
  std::string rv = o["metadata"]["resourceVersion"];
  std::thread writer([&] {
    json next = o;
    next["status"] = {{"phase", "Running"}};
    (void)srv_.store->UpdateStatus("sandboxes", next);
  });
  HttpCall call;
  call.path = kSandboxes + "?watch=true&resourceVersion=" + rv;
  call.stop_when = [](const std::string& body) {
    return body.find("\"Running\"") != std::string::npos;
  };
  HttpClient watcher(srv_.server->url());
  HttpResult r = watcher.Do(call);
  writer.join();
  EXPECT_EQ(r.code, 200);
  EXPECT_EQ(r.Header("transfer-encoding"), "chunked");
  json event = json::parse(r.body.substr(0, r.body.find('\n')));
  EXPECT_EQ(event["type"], "MODIFIED");
  EXPECT_EQ(event["object"]["status"]["phase"], "Running");
}

TEST(ApiServerWatchTest, TooOldVersionIsAnErrorEventWith410) {
  store::StoreOptions so;
  so.watch_history = 2;
  ServerUnderTest srv({}, so);
  HttpClient client(srv.server->url());
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(client.Send("POST", kSandboxes, SandboxJson("o" + std::to_string(i)).dump()).code,
              201);
  }
  HttpResult r = client.Get(kSandboxes + "?watch=1&resourceVersion=1");
  EXPECT_EQ(r.code, 200);
  json event = json::parse(r.body.substr(0, r.body.find('\n')));
  EXPECT_EQ(event["type"], "ERROR");
  EXPECT_EQ(event["object"]["kind"], "Status");
  EXPECT_EQ(event["object"]["code"], 410);
  EXPECT_EQ(event["object"]["reason"], "Expired");
}

TEST(ApiServerWatchTest, BookmarksWhenAllowedAndTimeoutEndsTheStream) {
  ApiServerOptions options;
  options.resources.bookmark_interval = std::chrono::seconds(1);
  ServerUnderTest srv(options);
  HttpClient client(srv.server->url());
  json o = client.Send("POST", kSandboxes, SandboxJson("b").dump()).Json();
  // A write to another resource moves the store past the sandbox's version: the bookmark tells
  // the watcher it has seen everything up to there.
  auto snap = srv.store->Create("sandboxsnapshots",
                                {{"apiVersion", "sandboxlet.dev/v1alpha1"},
                                 {"kind", "SandboxSnapshot"},
                                 {"metadata", {{"name", "s"}, {"namespace", "default"}}},
                                 {"spec", {{"sandboxName", "b"}}}});
  ASSERT_TRUE(snap.ok());
  HttpCall call;
  call.path = kSandboxes + "?watch=1&allowWatchBookmarks=true&resourceVersion=" +
              o["metadata"]["resourceVersion"].get<std::string>();
  call.stop_when = [](const std::string& body) {
    return body.find("BOOKMARK") != std::string::npos;
  };
  HttpResult r = client.Do(call);
  json event = json::parse(r.body.substr(0, r.body.find('\n')));
  EXPECT_EQ(event["type"], "BOOKMARK");
  EXPECT_EQ(event["object"]["kind"], "Sandbox");
  EXPECT_EQ(event["object"]["apiVersion"], "sandboxlet.dev/v1alpha1");
  EXPECT_EQ(event["object"]["metadata"]["resourceVersion"], (*snap)["metadata"]["resourceVersion"]);

  // A watch without a version starts with the current objects; timeoutSeconds ends it.
  HttpResult initial = client.Get(kSandboxes + "?watch=1&timeoutSeconds=1");
  EXPECT_EQ(initial.curl, CURLE_OK);
  EXPECT_THAT(initial.body, HasSubstr("\"type\":\"ADDED\""));
}

TEST_F(ApiServerTest, LimitsAndUnknownPaths) {
  std::string big(4 << 20, ' ');
  HttpResult r = client_.Send("POST", kSandboxes, "{" + big + "}");
  EXPECT_EQ(r.code, 413);
  EXPECT_EQ(r.Json()["reason"], "RequestEntityTooLarge");
  HttpResult unknown = client_.Get("/apis/sandboxlet.dev/v1alpha1/namespaces/default/widgets");
  EXPECT_EQ(unknown.code, 404);
  EXPECT_EQ(unknown.Json()["kind"], "Status");
  EXPECT_EQ(
      client_.Send("POST", "/apis/sandboxlet.dev/v1alpha1/namespaces/default/events", "{}").code,
      404);
  EXPECT_EQ(client_.Send("DELETE", "/api/v1/namespaces/default/events/x", "").code, 405);
  EXPECT_EQ(client_.Get("/api/v1/namespaces/default").Json()["status"]["phase"], "Active");
  EXPECT_EQ(client_.Get("/api/v1/namespaces/elsewhere").code, 404);
}

TEST_F(ApiServerTest, KeepAliveReusesTheConnection) {
  HttpResult first = client_.Get("/version");
  HttpResult second = client_.Get("/apis");
  EXPECT_EQ(first.connects, 1);
  EXPECT_EQ(second.connects, 0);
}

TEST(ApiServerSecurityTest, NonLoopbackNeedsTlsAndToken) {
  testing::TempDir dir;
  auto store = store::ObjectStore::Open(dir.path() + "/s.db");
  ASSERT_TRUE(store.ok());
  ApiServerOptions open;
  open.listen = "0.0.0.0:0";
  auto refused = ApiServer::Start(**store, open);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("not loopback"));
}

TEST(ApiServerSecurityTest, TlsWithBearerToken) {
  testing::TempDir dir;
  std::string cert = dir.path() + "/tls.crt", key = dir.path() + "/tls.key";
  auto gen = RunCommand(
      {"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
       "/CN=sandboxlet", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert},
      {.timeout = std::chrono::seconds(60)});
  if (!gen.ok() || !gen->ok()) GTEST_SKIP() << "openssl cannot make a test certificate";
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/token", "s3cret\n").ok());
  ApiServerOptions options;
  options.listen = "0.0.0.0:0";
  options.tls_cert_file = cert;
  options.tls_key_file = key;
  options.token_file = dir.path() + "/token";
  ServerUnderTest srv(options);
  ASSERT_NE(srv.server, nullptr);
  std::string url = "https://127.0.0.1:" + std::to_string(srv.server->port());
  EXPECT_EQ(srv.server->url(), url);
  HttpClient client(url);
  HttpCall call;
  call.path = "/version";
  call.ca_file = cert;
  HttpResult anonymous = client.Do(call);
  EXPECT_EQ(anonymous.code, 401);
  EXPECT_EQ(anonymous.Json()["reason"], "Unauthorized");
  call.headers = {"Authorization: Bearer wrong"};
  EXPECT_EQ(client.Do(call).code, 401);
  call.headers = {"Authorization: Bearer s3cret"};
  HttpResult ok = client.Do(call);
  EXPECT_EQ(ok.code, 200) << ok.body << " curl=" << ok.curl;
  EXPECT_EQ(ok.Json()["major"], "1");
  call.path = "/healthz";
  call.headers.clear();
  EXPECT_EQ(client.Do(call).code, 200);
}

TEST(KubeconfigTest, NamesClusterUserAndContextSandboxlet) {
  std::string text = Kubeconfig("https://127.0.0.1:6443", "tok", "-----BEGIN CERTIFICATE-----\n");
  auto docs = api::ParseYamlDocuments(text);
  ASSERT_TRUE(docs.ok()) << docs.status() << "\n" << text;
  json k = (*docs)[0];
  EXPECT_EQ(k["current-context"], "sandboxlet");
  EXPECT_EQ(k["clusters"][0]["name"], "sandboxlet");
  EXPECT_EQ(k["clusters"][0]["cluster"]["server"], "https://127.0.0.1:6443");
  EXPECT_FALSE(
      k["clusters"][0]["cluster"]["certificate-authority-data"].get<std::string>().empty());
  EXPECT_EQ(k["users"][0]["user"]["token"], "tok");
  EXPECT_EQ(k["contexts"][0]["context"]["cluster"], "sandboxlet");
  auto plain = api::ParseYamlDocuments(Kubeconfig("http://127.0.0.1:8080"));
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE((*plain)[0]["users"][0]["user"].contains("token"));
}

}  // namespace
}  // namespace sandboxlet::rest
