#include "server/cpu_budget.h"

#include <map>
#include <string>

#include "gtest/gtest.h"

namespace masknet {
namespace {

// A fake file system for CgroupCpuLimit.
class FakeFiles {
 public:
  FakeFiles& Add(const std::string& path, const std::string& contents) {
    files_[path] = contents;
    return *this;
  }
  FileReader reader() const {
    return [this](const std::string& path) -> std::optional<std::string> {
      auto it = files_.find(path);
      if (it == files_.end()) return std::nullopt;
      return it->second;
    };
  }

 private:
  std::map<std::string, std::string> files_;
};

constexpr char kV1Mounts[] =
    "30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
    "34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n";
constexpr char kV2Mounts[] = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";

TEST(CgroupCpuLimitTest, ReadsAV1QuotaRoundedUp) {
  FakeFiles files;
  files.Add("/proc/self/cgroup", "4:memory:/pod\n3:cpu,cpuacct:/pod/box\n")
      .Add("/proc/self/mountinfo", kV1Mounts)
      .Add("/sys/fs/cgroup/cpu,cpuacct/pod/box/cpu.cfs_quota_us", "150000\n")
      .Add("/sys/fs/cgroup/cpu,cpuacct/pod/box/cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(CgroupCpuLimit(files.reader()), 2);
}

TEST(CgroupCpuLimitTest, TakesTheSmallestQuotaOnThePathToTheRoot) {
  FakeFiles files;
  files.Add("/proc/self/cgroup", "3:cpu,cpuacct:/pod/box\n")
      .Add("/proc/self/mountinfo", kV1Mounts)
      .Add("/sys/fs/cgroup/cpu,cpuacct/pod/box/cpu.cfs_quota_us", "-1\n")
      .Add("/sys/fs/cgroup/cpu,cpuacct/pod/box/cpu.cfs_period_us", "100000\n")
      .Add("/sys/fs/cgroup/cpu,cpuacct/pod/cpu.cfs_quota_us", "300000\n")
      .Add("/sys/fs/cgroup/cpu,cpuacct/pod/cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(CgroupCpuLimit(files.reader()), 3);
}

TEST(CgroupCpuLimitTest, ReadsAV2CpuMax) {
  FakeFiles files;
  files.Add("/proc/self/cgroup", "0::/kubepods/pod1/c1\n")
      .Add("/proc/self/mountinfo", kV2Mounts)
      .Add("/sys/fs/cgroup/kubepods/pod1/c1/cpu.max", "50000 100000\n");
  EXPECT_EQ(CgroupCpuLimit(files.reader()), 1);
}

TEST(CgroupCpuLimitTest, AContainerSeesItsOwnCgroupAsTheMountRoot) {
  FakeFiles files;
  files.Add("/proc/self/cgroup", "0::/\n")
      .Add("/proc/self/mountinfo", "29 23 0:26 /kubepods/pod1 /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n")
      .Add("/sys/fs/cgroup/cpu.max", "400000 100000\n");
  EXPECT_EQ(CgroupCpuLimit(files.reader()), 4);
}

TEST(CgroupCpuLimitTest, NoQuotaIsNoLimit) {
  FakeFiles files;
  files.Add("/proc/self/cgroup", "0::/user.slice\n")
      .Add("/proc/self/mountinfo", kV2Mounts)
      .Add("/sys/fs/cgroup/user.slice/cpu.max", "max 100000\n");
  EXPECT_EQ(CgroupCpuLimit(files.reader()), std::nullopt);
  EXPECT_EQ(CgroupCpuLimit(FakeFiles().reader()), std::nullopt);
}

TEST(UsableCpusTest, IsAtLeastOne) { EXPECT_GE(UsableCpus(), 1); }

}  // namespace
}  // namespace masknet
