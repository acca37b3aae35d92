#include "log/reopenable_file_sink.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <spdlog/logger.h>
#include <spdlog/pattern_formatter.h>

namespace iperf3proxy::log {
namespace {

namespace fs = std::filesystem;

std::string read(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class ReopenableFileSinkTest : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("sink-test-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }

  void TearDown() override { fs::remove_all(dir_); }

  std::shared_ptr<spdlog::logger> loggerOn(std::shared_ptr<ReopenableFileSink> sink) {
    sink->set_formatter(std::make_unique<spdlog::pattern_formatter>("%v"));
    auto logger = std::make_shared<spdlog::logger>("sink-test", sink);
    logger->flush_on(spdlog::level::trace);
    return logger;
  }

  fs::path dir_;
};

TEST_F(ReopenableFileSinkTest, AppendsToAnExistingFile) {
  const auto path = dir_ / "proxy.log";
  std::ofstream(path) << "earlier\n";
  auto sink = std::make_shared<ReopenableFileSink>();
  std::string error;
  ASSERT_TRUE(sink->open(path.string(), &error)) << error;
  loggerOn(sink)->info("now");
  EXPECT_EQ(read(path), "earlier\nnow\n");
}

TEST_F(ReopenableFileSinkTest, ReopenAfterRenameStartsANewFile) {
  // What logrotate does: rename the file, then signal; the next lines go to a new file.
  const auto path = dir_ / "proxy.log";
  auto sink = std::make_shared<ReopenableFileSink>();
  std::string error;
  ASSERT_TRUE(sink->open(path.string(), &error)) << error;
  auto logger = loggerOn(sink);
  logger->info("before");
  fs::rename(path, dir_ / "proxy.log.1");
  logger->info("still the old file");
  ASSERT_TRUE(sink->reopen(&error)) << error;
  logger->info("after");
  EXPECT_EQ(read(dir_ / "proxy.log.1"), "before\nstill the old file\n");
  EXPECT_EQ(read(path), "after\n");
}

TEST_F(ReopenableFileSinkTest, AFileThatCannotBeOpenedIsAnErrorNamingIt) {
  auto sink = std::make_shared<ReopenableFileSink>();
  std::string error;
  const auto path = dir_ / "missing" / "proxy.log";
  EXPECT_FALSE(sink->open(path.string(), &error));
  EXPECT_NE(error.find(path.string()), std::string::npos) << error;
  EXPECT_NE(error.find("No such file"), std::string::npos) << error;
}

TEST_F(ReopenableFileSinkTest, AFailedReopenKeepsTheOldFile) {
  const auto sub = dir_ / "logs";
  fs::create_directories(sub);
  auto sink = std::make_shared<ReopenableFileSink>();
  std::string error;
  ASSERT_TRUE(sink->open((sub / "proxy.log").string(), &error)) << error;
  auto logger = loggerOn(sink);
  fs::rename(sub, dir_ / "moved");
  EXPECT_FALSE(sink->reopen(&error));
  logger->info("kept");
  EXPECT_EQ(read(dir_ / "moved" / "proxy.log"), "kept\n");
}

}  // namespace
}  // namespace iperf3proxy::log
