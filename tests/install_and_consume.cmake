# Installs the build into a scratch prefix, builds examples/batch against it
# with find_package(dermal), runs dermal-batch on a folder holding the tiny
# model's photo and a corrupt file, and checks results.csv and the overlay;
# then builds the C ABI test (tests/test_c_abi.c) with the C compiler and
# `pkg-config --cflags --libs dermal` alone, and runs it on the model fixtures.
#   cmake -DBUILD_DIR=... -DSOURCE_DIR=examples/batch -DWORK_DIR=... -DMODEL=tiny.pt -DPHOTO=tiny_input.png
#         -DC_COMPILER=cc -DC_PROGRAM=tests/test_c_abi.c -P ...
file(REMOVE_RECURSE ${WORK_DIR})

# Runs a command; fails the test unless it exits with EXPECTED (default 0).
function(run)
  cmake_parse_arguments(RUN "" "EXPECTED" "COMMAND" ${ARGN})
  if(NOT DEFINED RUN_EXPECTED)
    set(RUN_EXPECTED 0)
  endif()
  execute_process(COMMAND ${RUN_COMMAND} RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT status EQUAL RUN_EXPECTED)
    message(FATAL_ERROR "${RUN_COMMAND} exited with ${status}, not ${RUN_EXPECTED}:\n${out}\n${err}")
  endif()
  set(output "${out}" PARENT_SCOPE)
endfunction()

run(COMMAND ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK_DIR}/prefix)
run(COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/build -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix)
run(COMMAND ${CMAKE_COMMAND} --build ${WORK_DIR}/build)

file(MAKE_DIRECTORY ${WORK_DIR}/photos)
file(COPY ${PHOTO} DESTINATION ${WORK_DIR}/photos)
file(WRITE ${WORK_DIR}/photos/corrupt.jpg "not a JPEG, whatever the name says")
file(WRITE ${WORK_DIR}/photos/notes.txt "not a photo: skipped")
run(EXPECTED 1 COMMAND ${WORK_DIR}/build/dermal-batch --model ${MODEL} --out ${WORK_DIR}/out ${WORK_DIR}/photos)
if(NOT output MATCHES "2 photos, 1 failed" OR NOT output MATCHES "not a diagnosis")
  message(FATAL_ERROR "unexpected summary from dermal-batch:\n${output}")
endif()

file(READ ${WORK_DIR}/out/results.csv csv)
string(REPLACE ";" "|" csv "${csv}")  # top3's separator, which would split a CMake list
string(REGEX MATCHALL "[^\n]+" rows "${csv}")
get_filename_component(photo_name ${PHOTO} NAME)
get_filename_component(photo_stem ${PHOTO} NAME_WE)
set(label "(akiec|bcc|mel|nv|vasc)")
set(score "${label}:0\\.[0-9]+")
set(patterns
  "^file,top_label,probability,top3,error$"
  "^corrupt\\.jpg,,,,\"?invalid_image: .+$"
  "^${photo_name},${label},0\\.[0-9]+,${score}\\|${score}\\|${score},$")
list(LENGTH rows count)
if(NOT count EQUAL 3)
  message(FATAL_ERROR "results.csv has ${count} lines, not 3:\n${rows}")
endif()
foreach(i RANGE 2)
  list(GET rows ${i} row)
  list(GET patterns ${i} pattern)
  if(NOT row MATCHES "${pattern}")
    message(FATAL_ERROR "results.csv line ${i}: '${row}' does not match ${pattern}")
  endif()
endforeach()

file(READ ${WORK_DIR}/out/${photo_stem}-gradcam.jpg magic LIMIT 3 HEX)
if(NOT magic STREQUAL "ffd8ff")
  message(FATAL_ERROR "${photo_stem}-gradcam.jpg is not a JPEG (starts with ${magic})")
endif()
message(STATUS "dermal-batch built against the installed package classified ${photo_name} and reported corrupt.jpg")

# pkg-config: the installed dermal.pc is all a C build needs.
find_program(PKG_CONFIG pkg-config REQUIRED)
file(GLOB_RECURSE pc_files ${WORK_DIR}/prefix/*/dermal.pc)
list(LENGTH pc_files pc_count)
if(NOT pc_count EQUAL 1)
  message(FATAL_ERROR "the install holds ${pc_count} dermal.pc files, not 1: ${pc_files}")
endif()
get_filename_component(pc_dir ${pc_files} DIRECTORY)
run(COMMAND ${CMAKE_COMMAND} -E env PKG_CONFIG_PATH=${pc_dir} ${PKG_CONFIG} --cflags --libs dermal)
string(STRIP "${output}" pkg_flags)
message(STATUS "pkg-config --cflags --libs dermal: ${pkg_flags}")
separate_arguments(pkg_flags UNIX_COMMAND "${pkg_flags}")
get_filename_component(model_dir ${MODEL} DIRECTORY)
run(COMMAND ${C_COMPILER} -std=c99 -Wall -Werror ${C_PROGRAM} ${pkg_flags} -o ${WORK_DIR}/test_c_abi)
run(COMMAND ${CMAKE_COMMAND} -E env LD_LIBRARY_PATH=${pc_dir}/..
        ${WORK_DIR}/test_c_abi ${model_dir})
message(STATUS "a C program built with pkg-config's flags for the installed dermal passed the C ABI test")
