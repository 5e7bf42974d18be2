// The tests' entry point (Catch2 2 compiles its runner where CATCH_CONFIG_RUNNER is defined).
#define CATCH_CONFIG_RUNNER
#include "catch2.hpp"

int main(int argc, char* argv[]) { return Catch::Session().run(argc, argv); }
