# The libFuzzer targets of tests/fuzz: one <name>.cc and one seed corpus, corpus/<name>/, each.
# Shared by the fuzz tree's build (CMakeLists.txt) and the main tree's ctest registration (fuzz_tests.cmake).
set(MQ_FUZZ_TARGETS
  fuzz_request_bodies    # mqd: parse_produce_body, parse_ack_body, parse_nack_body, parse_touch_body
  fuzz_query_values      # mqd: required_name, optional_partition, required_partition, subscribe_options
  fuzz_record_line       # libmq: RecordValidator::validate / produced_fields, parse_offset_prefix
  fuzz_produce_to_record # differential: what parse_produce_body accepts, recovery's validator accepts
  fuzz_log_recovery      # libmq: recover_log over an in-memory log and index
  fuzz_sse_parser        # libmq: SseParser, fed whole and in fuzz-chosen chunks
  fuzz_config_env        # libmq: parse_topics, config_from_env; mqd: daemon_config_from_env
  fuzz_copied_lines      # differential: what a follower accepts from its leader, recovery keeps whole; fetch answers
)
