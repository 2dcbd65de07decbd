// mqd holds a file descriptor per connection, partition log and group journal: start with the most
// the system allows.
#pragma once

namespace mqd {

// Raises the soft RLIMIT_NOFILE to the hard limit; says on stderr when that fails.
void raise_open_file_limit();

}  // namespace mqd
