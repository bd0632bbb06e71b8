// ch-sim's HTTP behaviour, reproducing micro-http inside CH (CONTRACT §1, §4), checked with
// hand-written requests on a raw Unix socket.
#include <unistd.h>

#include <cstdio>
#include <memory>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"
#include "test/chsim/chsim_test_support.h"

namespace sandboxlet::chsim::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

class ChsimHttp : public ::testing::Test {
 protected:
  void SetUp() override {
    files_ = MakeVmFiles(dir_);
    sim_ = std::make_unique<Sim>(dir_.path(), SimSpec{});
    ASSERT_TRUE(sim_->WaitReady());
  }
  std::string Config() const { return MinimalConfig(files_).dump(); }

  TempDir dir_;
  VmFiles files_;
  std::unique_ptr<Sim> sim_;
};

TEST_F(ChsimHttp, StatusLineHasNoReasonPhraseAndBodyHeadersFollow) {
  Conn c(sim_->sock());
  ASSERT_TRUE(c.Send(Req("GET", "vmm.ping")));
  Response r = c.Read();
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.head,
            Cat("HTTP/1.1 200 \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n"
                "Content-Type: application/json\r\nContent-Length: ",
                r.body.size(), "\r\n\r\n"));
  Json ping = r.json();
  EXPECT_EQ(ping["version"], "53.0.0");
  EXPECT_EQ(ping["build_version"], "v53.0");
  EXPECT_EQ(ping["pid"], sim_->pid());
  EXPECT_TRUE(ping["features"].is_array());
}

TEST_F(ChsimHttp, NoContentCarriesNoContentLength) {
  Conn c(sim_->sock());
  ASSERT_TRUE(c.Send(Req("PUT", "vm.create", Config())));
  Response r = c.Read();
  EXPECT_EQ(r.head,
            "HTTP/1.1 204 \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n\r\n");
  // An empty non-204 answer says Content-Length: 0 (v39+): vm.create without a body.
  ASSERT_TRUE(c.Send(Req("PUT", "vm.create")));
  r = c.Read();
  EXPECT_EQ(r.code, 400);
  EXPECT_THAT(r.head, HasSubstr("\r\nContent-Length: 0\r\n"));
  EXPECT_EQ(r.body, "");
}

TEST_F(ChsimHttp, KeepAliveAndPipelinedRequestsAnsweredInOrder) {
  Conn c(sim_->sock());
  // Connection: close is ignored: the server never closes.
  ASSERT_TRUE(c.Send(Req("GET", "vm.info", std::nullopt, "Connection: close\r\n") +
                     Req("PUT", "vm.create", Config()) + Req("GET", "vm.info")));
  EXPECT_EQ(c.Read().code, 404);
  EXPECT_EQ(c.Read().code, 204);
  Response info = c.Read();
  EXPECT_EQ(info.code, 200);
  EXPECT_EQ(info.json()["state"], "Created");
  ASSERT_TRUE(c.Send(Req("GET", "vmm.ping")));
  EXPECT_EQ(c.Read().code, 200);
}

TEST_F(ChsimHttp, ChunkedBodyIsMisparsedAsTheNextRequest) {
  Conn c(sim_->sock());
  const std::string body = Config();
  char chunk_size[32];
  std::snprintf(chunk_size, sizeof(chunk_size), "%zx", body.size());
  ASSERT_TRUE(c.Send(Cat("PUT /api/v1/vm.create HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                         chunk_size, "\r\n", body, "\r\n0\r\n\r\n")));
  // No Content-Length: vm.create has no body (400 empty); the chunk is then a bad request line.
  Response first = c.Read();
  EXPECT_EQ(first.code, 400);
  EXPECT_EQ(first.body, "");
  EXPECT_EQ(c.Read().code, 400);
  bool eof = false;
  c.ReadUntilEof(5000, &eof);
  EXPECT_TRUE(eof);
  EXPECT_EQ(sim_->Call("GET", "vm.info").code, 404);  // nothing was created
}

TEST_F(ChsimHttp, BodiesAreCappedAt51200Bytes) {
  // Unknown fields are ignored, so padding makes a valid config of exactly the limit.
  Json config = MinimalConfig(files_);
  config["padding"] = "";
  const size_t base = config.dump().size();
  config["padding"] = std::string(51200 - base, 'x');
  ASSERT_EQ(config.dump().size(), 51200u);
  EXPECT_EQ(sim_->Call("PUT", "vm.create", config.dump()).code, 204);

  Conn c(sim_->sock());
  ASSERT_TRUE(c.Send(Req("PUT", "vm.create", std::string(51201, ' '))));
  Response r = c.Read();
  EXPECT_EQ(r.code, 400);
  EXPECT_TRUE(r.json().is_discarded()) << r.body;
  bool eof = false;
  c.ReadUntilEof(5000, &eof);
  EXPECT_TRUE(eof);
}

TEST_F(ChsimHttp, ExpectContinueGetsInterimResponse) {
  Conn c(sim_->sock());
  const std::string body = Config();
  ASSERT_TRUE(
      c.Send(Cat("PUT /api/v1/vm.create HTTP/1.1\r\nExpect: 100-continue\r\n"
                 "Content-Length: ",
                 body.size(), "\r\n\r\n")));
  Response interim = c.Read();
  EXPECT_EQ(interim.code, 100);
  EXPECT_THAT(interim.head, StartsWith("HTTP/1.1 100 \r\n"));
  ASSERT_TRUE(c.Send(body));
  EXPECT_EQ(c.Read().code, 204);
}

TEST_F(ChsimHttp, OverlongHeaderLineIsRejectedAndConnectionClosed) {
  Conn c(sim_->sock());
  ASSERT_TRUE(c.Send(
      Req("GET", "vmm.ping", std::nullopt, Cat("X-Padding: ", std::string(1100, 'a'), "\r\n"))));
  EXPECT_EQ(c.Read().code, 400);
  bool eof = false;
  c.ReadUntilEof(5000, &eof);
  EXPECT_TRUE(eof);
  // A header line just under the limit is fine.
  Conn ok(sim_->sock());
  ASSERT_TRUE(ok.Send(
      Req("GET", "vmm.ping", std::nullopt, Cat("X-Padding: ", std::string(1000, 'a'), "\r\n"))));
  EXPECT_EQ(ok.Read().code, 200);
}

TEST_F(ChsimHttp, EleventhConnectionGets503AndIsClosed) {
  std::vector<std::unique_ptr<Conn>> open;
  for (int i = 0; i < 10; ++i) {
    open.push_back(std::make_unique<Conn>(sim_->sock()));
    ASSERT_TRUE(open.back()->Send(Req("GET", "vmm.ping")));
    ASSERT_EQ(open.back()->Read().code, 200);  // accepted and served
  }
  Conn eleventh(sim_->sock());
  Response r = eleventh.Read();
  EXPECT_EQ(r.code, 503);
  EXPECT_EQ(r.body, R"({ "error": "Too many open connections" })");
  bool eof = false;
  eleventh.ReadUntilEof(5000, &eof);
  EXPECT_TRUE(eof);
  // Closing one frees a slot.
  open.pop_back();
  ASSERT_TRUE(open[0]->Send(Req("GET", "vmm.ping")));  // the server has noticed the close
  ASSERT_EQ(open[0]->Read().code, 200);
  Conn again(sim_->sock());
  ASSERT_TRUE(again.Send(Req("GET", "vmm.ping")));
  EXPECT_EQ(again.Read().code, 200);
}

TEST_F(ChsimHttp, ExactPathsMethodsAndBodies) {
  for (const char* target : {"/api/v1/vmm.ping?x=1", "/api/v1/vmm.ping/", "/api/v1/vm.nothing",
                             "/api/v2/vmm.ping", "/"}) {
    Conn c(sim_->sock());
    ASSERT_TRUE(c.Send(Cat("GET ", target, " HTTP/1.1\r\n\r\n")));
    Response r = c.Read();
    EXPECT_EQ(r.code, 404) << target;
    EXPECT_EQ(r.body, R"(["Not Found"])") << target;
  }
  EXPECT_EQ(sim_->Call("PUT", "vmm.ping").code, 400);
  EXPECT_EQ(sim_->Call("GET", "vm.create").code, 400);
  // Any body on a no-body action is 400, even {}.
  ASSERT_EQ(sim_->Call("PUT", "vm.create", Config()).code, 204);
  EXPECT_EQ(sim_->Call("PUT", "vm.boot", "{}").code, 400);
  EXPECT_EQ(sim_->Call("GET", "vm.info").json()["state"], "Created");
  // HTTP/1.0 is accepted too.
  Conn c(sim_->sock());
  ASSERT_TRUE(c.Send("GET /api/v1/vmm.ping HTTP/1.0\r\n\r\n"));
  EXPECT_EQ(c.Read().code, 200);
}

TEST(ChsimHttpSerial, OneRequestAtATimeForTheWholeVmm) {
  TempDir dir;
  const std::string record = dir / "requests";
  Sim sim(dir.path(), {.env = {"CHSIM_FAULTS=delay vm.info 300;record " + record}});
  ASSERT_TRUE(sim.WaitReady());
  Conn slow(sim.sock());
  ASSERT_TRUE(slow.Send(Req("GET", "vm.info")));
  // Wait until the simulator has taken the slow request (it is recorded on receipt).
  for (int i = 0; i < 1000 && ReadFile(record).value_or("").find("vm.info") == std::string::npos;
       ++i) {
    ::usleep(5000);
  }
  Conn ping(sim.sock());
  ASSERT_TRUE(ping.Send(Req("GET", "vmm.ping")));
  // The ping cannot be answered before the slow request: once it is, the slow one already was.
  ASSERT_EQ(ping.Read().code, 200);
  EXPECT_FALSE(slow.Silent(0));
  EXPECT_EQ(slow.Read(0).code, 404);
}

}  // namespace
}  // namespace sandboxlet::chsim::testing
