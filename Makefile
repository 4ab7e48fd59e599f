# Build and install mmxa as a system library.
#
#   make                                   cargo build --release, the soname link, the adapters
#                                          (in $(BUILD), beside a libmmxa.so.$(SOMAJOR) link to the
#                                          library, so they load from there as once installed)
#   make install PREFIX=/usr/local         install (DESTDIR=/staging for packaging), stripped
#   make install STRIP=                    install with the debug information kept
#   make uninstall PREFIX=/usr/local       remove what install installed
#   make clean                             remove the adapters' build directory ($(BUILD))
#
# Installed under $(DESTDIR)$(PREFIX):
#   lib/libmmxa.so.$(VERSION)             the shared library; its soname is libmmxa.so.$(SOMAJOR)
#   lib/libmmxa.so.$(SOMAJOR) -> libmmxa.so.$(VERSION), lib/libmmxa.so -> libmmxa.so.$(SOMAJOR)
#   lib/libmmxa.a                         the static library (its system libraries are in
#                                         mmxa.pc's Libs.private: pkg-config --static)
#   lib/libmmxa_lixa.so, lib/libmmxa_lixa_dynamic.so   LIXA switch files (adapters/)
#   lib/libmmxa_ndrx.so, lib/libmmxa_ndrx_dynamic.so   Enduro/X drivers (adapters/)
#   include/mmxa/xa.h, include/mmxa/mmxa.h
#   bin/mmxa                              the operator's tool (init, status, recover,
#                                         heuristic commit/rollback, get, dump, verify)
#   lib/pkgconfig/mmxa.pc                 Cflags: -I$(INCLUDEDIR)/mmxa   Libs: -lmmxa
#   lib/pkgconfig/mmxa-rpath.pc           the same, plus -Wl,-rpath,$(LIBDIR)
# so that `cc prog.c $(pkg-config --cflags --libs mmxa)` builds a program that says
# #include "xa.h" / #include "mmxa.h" (or <xa.h>, <mmxa.h>); with `mmxa-rpath` instead of
# `mmxa`, the program finds the library in LIBDIR without LD_LIBRARY_PATH or ldconfig (for a
# PREFIX outside the loader's search path).
#
# The installed binaries and libraries are stripped of debug information with $(STRIP) (the
# shared objects and the tool of their symbol tables too; libmmxa.a keeps its symbols).
# `make install STRIP=` installs them as built, with their debug information.
#
# To install an existing build without running cargo: CARGO=true RUST_OUT=dir-with-libmmxa.so
# (and BIN_OUT=dir-with-mmxa if the tool is elsewhere).

PREFIX     ?= /usr/local
DESTDIR    ?=
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
BINDIR     ?= $(PREFIX)/bin
CARGO      ?= cargo
CC         ?= cc
INSTALL    ?= install
# Empty: install unstripped (with debug information).
STRIP      ?= strip
# Where cargo leaves libmmxa.so and libmmxa.a, and the mmxa tool.
RUST_OUT   ?= target/release
BIN_OUT    ?= $(RUST_OUT)
# Where the adapters are built.
BUILD      ?= target/adapters

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
# Must agree with SONAME in build.rs.
SOMAJOR := 0
# What libmmxa.a needs from the system (rustc --print native-static-libs, x86_64/aarch64 gnu).
STATIC_LIBS := -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc

ADAPTERS := $(BUILD)/libmmxa_lixa.so $(BUILD)/libmmxa_lixa_dynamic.so \
            $(BUILD)/libmmxa_ndrx.so $(BUILD)/libmmxa_ndrx_dynamic.so
ADAPTER_CFLAGS := -O2 -g -std=c99 -Wall -Wextra -Werror -fPIC -shared -Iinclude
# $ORIGIN: an adapter finds libmmxa.so.$(SOMAJOR) in its own directory, installed or in $(BUILD).
ADAPTER_LINK := -L$(RUST_OUT) -lmmxa -Wl,-rpath,'$$ORIGIN'
# In $(BUILD), what the adapters' $ORIGIN finds: the library cargo built.
BUILD_SONAME := $(BUILD)/libmmxa.so.$(SOMAJOR)

# libdir and includedir in mmxa.pc relative to ${prefix} when they are under it.
PC_LIBDIR     := $(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))
PC_INCLUDEDIR := $(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))

.PHONY: all lib adapters install uninstall clean FORCE

all: lib adapters

# Cargo knows whether the library is up to date; make only asks it every time.
$(RUST_OUT)/libmmxa.so: FORCE
	$(CARGO) build --release

# Programs linked with -lmmxa load libmmxa.so.$(SOMAJOR): the symlink ldconfig would make, so
# they also run against the build directory.
lib: $(RUST_OUT)/libmmxa.so
	test -L $(RUST_OUT)/libmmxa.so.$(SOMAJOR) || ln -sf libmmxa.so $(RUST_OUT)/libmmxa.so.$(SOMAJOR)

adapters: $(ADAPTERS) $(BUILD_SONAME)

$(BUILD):
	mkdir -p $@

# Remade every time, so it follows RUST_OUT.
$(BUILD_SONAME): FORCE | lib $(BUILD)
	ln -sf $(abspath $(RUST_OUT))/libmmxa.so $@

$(BUILD)/libmmxa_%_dynamic.so: adapters/%_switch.c include/mmxa.h | lib $(BUILD)
	$(CC) $(ADAPTER_CFLAGS) -DMMXA_ADAPTER_DYNAMIC $< -o $@ $(ADAPTER_LINK)

$(BUILD)/libmmxa_%.so: adapters/%_switch.c include/mmxa.h | lib $(BUILD)
	$(CC) $(ADAPTER_CFLAGS) $< -o $@ $(ADAPTER_LINK)

install: all
	$(INSTALL) -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)/mmxa $(DESTDIR)$(BINDIR)
	$(INSTALL) -m 0755 $(BIN_OUT)/mmxa $(DESTDIR)$(BINDIR)/mmxa
	$(INSTALL) -m 0755 $(RUST_OUT)/libmmxa.so $(DESTDIR)$(LIBDIR)/libmmxa.so.$(VERSION)
	ln -sf libmmxa.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libmmxa.so.$(SOMAJOR)
	ln -sf libmmxa.so.$(SOMAJOR) $(DESTDIR)$(LIBDIR)/libmmxa.so
	$(INSTALL) -m 0644 $(RUST_OUT)/libmmxa.a $(DESTDIR)$(LIBDIR)/libmmxa.a
	$(INSTALL) -m 0755 $(ADAPTERS) $(DESTDIR)$(LIBDIR)/
	$(INSTALL) -m 0644 include/xa.h include/mmxa.h $(DESTDIR)$(INCLUDEDIR)/mmxa/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(PC_LIBDIR)|' \
	    -e 's|@INCLUDEDIR@|$(PC_INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' \
	    -e 's|@STATIC_LIBS@|$(STATIC_LIBS)|' -e '/^#/d' mmxa.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/mmxa.pc
	chmod 0644 $(DESTDIR)$(LIBDIR)/pkgconfig/mmxa.pc
	sed -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@VERSION@|$(VERSION)|' -e '/^#/d' \
	    mmxa-rpath.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/mmxa-rpath.pc
	chmod 0644 $(DESTDIR)$(LIBDIR)/pkgconfig/mmxa-rpath.pc
ifneq ($(strip $(STRIP)),)
	$(STRIP) --strip-unneeded $(DESTDIR)$(LIBDIR)/libmmxa.so.$(VERSION) \
	    $(addprefix $(DESTDIR)$(LIBDIR)/,$(notdir $(ADAPTERS)))
	$(STRIP) --strip-debug $(DESTDIR)$(LIBDIR)/libmmxa.a
	$(STRIP) $(DESTDIR)$(BINDIR)/mmxa
endif

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libmmxa.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libmmxa.so.$(SOMAJOR) \
	      $(DESTDIR)$(LIBDIR)/libmmxa.so $(DESTDIR)$(LIBDIR)/libmmxa.a \
	      $(addprefix $(DESTDIR)$(LIBDIR)/,$(notdir $(ADAPTERS))) \
	      $(DESTDIR)$(LIBDIR)/pkgconfig/mmxa.pc $(DESTDIR)$(LIBDIR)/pkgconfig/mmxa-rpath.pc \
	      $(DESTDIR)$(INCLUDEDIR)/mmxa/xa.h $(DESTDIR)$(INCLUDEDIR)/mmxa/mmxa.h \
	      $(DESTDIR)$(BINDIR)/mmxa
	-rmdir $(DESTDIR)$(INCLUDEDIR)/mmxa

clean:
	rm -rf $(BUILD)

FORCE:
