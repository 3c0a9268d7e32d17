"""The test doubles of pbs-globus-staging: not the product.

The Globus emulator, the PBS double, whole sites on one machine and the demo, in their
own distribution (``pbs-globus-staging-sim``, the product's ``[sim]`` extra).  They import
the product by its absolute name; the product imports nothing from here.
"""
