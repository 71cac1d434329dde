"""The live session pages under ``/ui``: server-rendered, one script of the service's own, the
same store and job states as ``/v1``, torch-free. A token is exchanged for a cookie at
sign-in; forms are checked for their origin; every page says where scripts may come from."""
