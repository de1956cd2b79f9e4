// Whole-file reads with a size bound, and atomic writes (temp file, fsync, rename), so a
// crash or a full disk never leaves a truncated file under the final name.
//
//   std::vector<uint8_t> b = qnet::read_file("model.qbin", 1 << 30);
//   qnet::check_output_path("metrics.json");          // before the work: fails now, not after it
//   qnet::write_file_atomic("metrics.json", std::string_view(json));
//
// The rules (docs/hardening.md):
// - Only regular files are read or replaced. A device, FIFO or folder is refused by name, never
//   opened for reading (a FIFO would block) and never turned into a file.
// - An output path that is a symbolic link is written through: the link stays and its target
//   (followed to the end of the chain) gets the new content.
// - Temporaries are named "PATH.tmp.PID.N" beside the target. A save first removes those of
//   its own target whose process is gone (a SIGKILL left them); SIGINT and SIGTERM remove the
//   ones in flight when remove_temporaries_on_signal() was called (the programs do).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace qnet {

class IoError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws IoError ("PATH: no such file", "PATH: N bytes, more than the M allowed", ...).
std::vector<uint8_t> read_file(const std::string& path, uint64_t max_bytes);
void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes);
void write_file_atomic(const std::string& path, std::string_view text);

// The file a write to PATH replaces: PATH itself, or the end of its chain of symbolic links.
std::string output_target(const std::string& path);

// Throws IoError unless write_file_atomic(PATH) can succeed as far as can be known now: PATH is
// not empty, its target is a regular file or missing, and a file can be created in the target's
// folder (tried: a temporary is created and removed, so a missing, read-only or /proc folder
// fails here). `what` names the option in the message, e.g. "-o".
void check_output_path(const std::string& path, const std::string& what);

// Whether two paths name the same file: the same directory entry after following symbolic
// links, whether or not the file exists yet ("out/a.qbin" and "./out/../out/a.qbin" do).
bool same_file(const std::string& a, const std::string& b);

// Installs SIGINT/SIGTERM handlers that unlink the temporaries of saves in progress, then die
// of the signal as before. Idempotent.
void remove_temporaries_on_signal();

}  // namespace qnet
