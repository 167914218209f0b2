int main( { return 0; }
#include <missing.h>
