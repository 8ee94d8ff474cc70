/* No-op stand-in for libgupnp-igd-1.0 (UPnP port mapping, never wanted on
   loopback). Debian bookworm's simple-whip-client links libsoup2 while libnice
   pulls libsoup3 through gupnp-igd, and GLib aborts when both load; with this
   library first on LD_LIBRARY_PATH libsoup3 never loads. Used only by
   media/gstreamer_test.go. */
#include <stddef.h>
typedef unsigned long GType;
void *gupnp_simple_igd_thread_new(void) { return NULL; }
GType gupnp_simple_igd_get_type(void) { return 0; }
void gupnp_simple_igd_add_port(void *self, const char *protocol, unsigned int external_port, const char *local_ip,
                               unsigned int local_port, unsigned int lease_duration, const char *description) {}
void gupnp_simple_igd_remove_port_local(void *self, const char *protocol, const char *local_ip, unsigned int local_port) {}
