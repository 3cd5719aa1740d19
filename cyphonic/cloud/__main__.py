from cyphonic.cloud.run import main

main("cyphonic.cloud", with_auth=True, with_nms=True)
