"""The SimPy discrete-event model of the serving stack, driven on a virtual clock."""
