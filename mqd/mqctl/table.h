// An aligned text table for people: a header line and rows, columns two spaces apart, numbers
// right-aligned, no trailing blanks (so that `mqctl stats | awk` and `column -t` see clean fields).
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace mqctl {

// Not thread-safe.
class Table {
 public:
  enum class Align { kLeft, kRight };
  struct Column {
    std::string title;
    Align align = Align::kLeft;
  };

  explicit Table(std::vector<Column> columns);

  // One row; `cells` has one string per column (missing ones are blank, extra ones dropped).
  void add_row(std::vector<std::string> cells);
  bool empty() const { return rows_.empty(); }
  void print(std::ostream& out) const;

 private:
  std::vector<Column> columns_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace mqctl
