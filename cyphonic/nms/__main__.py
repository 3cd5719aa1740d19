from cyphonic.cloud.run import main

main("cyphonic.nms", with_auth=False, with_nms=True)
