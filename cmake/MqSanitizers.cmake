# A sanitizer tree instruments everything it compiles. -O1 keeps heavy translation units tolerable
# (ASan at -O2 took one file from 9 s to 80 s); -g1 (line tables, enough for symbolised stacks)
# compiles a fifth faster than full debug information.
if(MQ_SANITIZE STREQUAL "address")
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all -O1 -g1)
  add_link_options(-fsanitize=address,undefined)
elseif(MQ_SANITIZE STREQUAL "thread")
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer -O1 -g1)
  add_link_options(-fsanitize=thread)
elseif(NOT MQ_SANITIZE STREQUAL "")
  message(FATAL_ERROR "MQ_SANITIZE must be '', 'address' or 'thread', not '${MQ_SANITIZE}'")
endif()
