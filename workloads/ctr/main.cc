// peerd-ctr: pull images through containerd and time them (see ctr_options.cc's help). main() only wires:
// parse the arguments, read the image lists, build the logger, run.
#include <iostream>
#include <string>
#include <vector>

#include "peerd/daemon/log.h"
#include "workloads/common/arguments.h"
#include "workloads/common/program.h"
#include "workloads/ctr/ctr_options.h"
#include "workloads/ctr/ctr_workload.h"

int main(int argc, char** argv) {
  using namespace peerd::workload;
  constexpr std::string_view kProgram = "peerd-ctr";
  const std::vector<std::string> arguments(argv + 1, argv + argc);
  auto command = parse_ctr_arguments(arguments);
  if (!command) return usage_error(kProgram, command.error());
  if (command->action == CtrCommand::Action::kHelp) {
    std::cout << ctr_help();
    return kExitPassed;
  }
  if (command->action == CtrCommand::Action::kVersion) {
    std::cout << kProgram << " " << PEERD_VERSION << "\n";
    return kExitPassed;
  }
  CtrOptions& options = command->options;
  for (const auto& path : options.images_files) {
    auto refs = read_list_file(path);
    if (!refs) return usage_error(kProgram, "--images-file: " + refs.error());
    options.image_refs.insert(options.image_refs.end(), refs->begin(), refs->end());
  }
  if (auto checked = check_image_refs(options.image_refs); !checked)
    return usage_error(kProgram, checked.error());

  const auto logger = peerd::daemon::Logger(options.log_level, write_stdout)
                          .with({{"node", resolve_node_name(options.node_name)}, {"version", PEERD_VERSION}});
  return run_ctr_workload(options, logger);
}
