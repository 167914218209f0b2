VALUE = "fleetextra was installed for the build"
